//! What every function binary does around its handler: logging set-up,
//! stopping with a clear message when configuration is wrong, and one log
//! line per request with its status and duration (SPEC §6).

use std::future::Future;
use std::time::Instant;

use lambda_http::{Body, Error, Request, RequestExt as _, Response, service_fn};
use tracing::Instrument as _;

/// Sets up logging as Lambda's advanced logging controls ask: JSON lines
/// when `AWS_LAMBDA_LOG_FORMAT=JSON`, the level from `AWS_LAMBDA_LOG_LEVEL`
/// (else `RUST_LOG`, else INFO). Unlike the runtime's default subscriber it
/// never writes ANSI colour codes: the lines go to CloudWatch or the
/// emulator's log, not to a terminal.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;

    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .with_env_filter(
            EnvFilter::builder()
                .with_default_directive(level.into())
                .from_env_lossy(),
        );
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The value of a cold-start step, or a logged message and exit status 1.
/// Lambda reports the exit as an init error; the emulator as one too.
pub fn or_exit<T, E: std::fmt::Display>(function: &str, result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => {
            tracing::error!(%error, "{function} cannot start");
            eprintln!("{function}: cannot start: {error}");
            std::process::exit(1);
        }
    }
}

/// Runs `handler` under the Lambda runtime, logging one line per request.
pub async fn run<F, Fut>(function: &'static str, handler: F) -> Result<(), Error>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Response<Body>> + Send,
{
    lambda_http::run(service_fn(|request: Request| {
        let request_id = request
            .lambda_context_ref()
            .map(|c| c.request_id.clone())
            .unwrap_or_default();
        let method = request.method().clone();
        let path = request.raw_http_path().to_owned();
        let span = tracing::info_span!("request", function, request_id);
        let started = Instant::now();
        let response = handler(request);
        async move {
            let response = response.instrument(span.clone()).await;
            span.in_scope(|| {
                tracing::info!(
                    %method,
                    path,
                    status = response.status().as_u16(),
                    duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "request finished"
                );
            });
            Ok::<_, std::convert::Infallible>(response)
        }
    }))
    .await
}
