//! The HTTP front: accepts client connections, enforces the limits, routes
//! each request to its function's pool, maps the outcome back to HTTP and
//! writes one log line per request. Stops accepting on shutdown and lets
//! in-flight requests finish within the grace period.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::event::{self, EventContext, MapError};
use crate::health;
use crate::pool::{InvokeResult, Outcome, Pool, Rejected};
use crate::problem::{Body, Code, problem};
use crate::routes::{RESERVED_PREFIX, RouteMatch, RouteTable};

/// Lambda's synchronous invocation payload limit, which API Gateway
/// enforces on request bodies as well.
pub const MAX_BODY: usize = 6 * 1024 * 1024;
/// Buffer bound of the HTTP/1 parser, which bounds the request head.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers one request may carry.
const MAX_HEADERS: usize = 100;
/// Time a client gets to send its body once its headers are in.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of an oversized body read (and dropped) before the 413.
const DRAIN_MAX: usize = 16 * 1024 * 1024;
/// Longest time spent on that.
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// Header telling clients which request id to quote (API Gateway's name).
const REQUEST_ID_HEADER: &str = "apigw-requestid";
/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_SECONDS: &str = "1";

/// What every request handler shares.
pub struct App {
    /// The route table.
    pub table: RouteTable,
    /// One pool per function, in the table's function order.
    pub pools: Vec<Arc<Pool>>,
    /// Set once shutdown begins: readiness turns false.
    pub stopping: AtomicBool,
}

/// Front settings.
#[derive(Debug, Clone, Copy)]
pub struct FrontSettings {
    /// Time allowed to read a request's headers.
    pub header_timeout: Duration,
    /// Time in-flight requests get after shutdown begins.
    pub grace: Duration,
}

/// Serves clients until `shutdown` turns true, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    settings: FrontSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(err) => {
                // Out of descriptors and the like: back off, keep serving.
                warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let conn = http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(&app, peer, req).await) }
            }),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                debug!(error = %err, "client connection ended");
            }
        });
    }
    drop(listener);
    info!(
        connections = graceful.count(),
        "stopped accepting; waiting for in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => info!("all client connections closed"),
        () = tokio::time::sleep(settings.grace) => {
            warn!("shutdown grace period over with requests still in flight");
        }
    }
}

/// Facts for the request log line.
#[derive(Default)]
struct LogFields {
    function: Option<String>,
    instance: Option<u64>,
    request_id: Option<Arc<str>>,
    cold: Option<bool>,
}

async fn handle(app: &App, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut fields = LogFields::default();
    let mut response = route(app, peer, req, &mut fields).await;
    if let Some(id) = &fields.request_id
        && let Ok(v) = HeaderValue::from_str(id)
    {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let start = fields.cold.map(|cold| if cold { "cold" } else { "warm" });
    info!(
        target: "emulator::request",
        function = fields.function.as_deref(),
        instance = fields.instance,
        request_id = fields.request_id.as_deref(),
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        duration_ms = micros(started.elapsed()) / 1000.0,
        start,
        "request"
    );
    response
}

async fn route(
    app: &App,
    peer: SocketAddr,
    req: Request<Incoming>,
    fields: &mut LogFields,
) -> Response<Body> {
    let path = req.uri().path();
    if path == RESERVED_PREFIX || path.starts_with("/_emulator/") {
        return health::handle(
            req.method(),
            path,
            &app.pools,
            app.stopping.load(Ordering::Relaxed),
        );
    }
    let (route_key, function, params) = match app.table.find(req.method(), path) {
        RouteMatch::Found { route, params } => (route.route_key.clone(), route.function, params),
        RouteMatch::NotFound => {
            return problem(Code::NotFound, "No route matches this path.");
        }
        RouteMatch::MethodNotAllowed { allow } => {
            let mut r = problem(
                Code::MethodNotAllowed,
                "This path does not accept this method.",
            );
            if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return r;
        }
    };
    let Some(pool) = app.pools.get(function) else {
        return problem(Code::NotFound, "No route matches this path.");
    };
    fields.function = Some(pool.spec.name.clone());
    let request_id: Arc<str> = Arc::from(Uuid::new_v4().to_string());
    fields.request_id = Some(request_id.clone());

    let (parts, mut body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        drain(body).await;
        return too_large();
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, read_body(&mut body)).await {
        Ok(Ok(Some(bytes))) => bytes,
        Ok(Ok(None)) => {
            drain(body).await;
            return too_large();
        }
        Ok(Err(_)) => return problem(Code::BadRequest, "The request body could not be read."),
        Err(_) => {
            return problem(
                Code::RequestTimeout,
                "The request body did not arrive in time.",
            );
        }
    };

    let ctx = EventContext {
        route_key: &route_key,
        path_parameters: params,
        request_id: &request_id,
        source_ip: peer.ip(),
        now: OffsetDateTime::now_utc(),
    };
    let event = match event::build_event(&parts, &body, ctx) {
        Ok(e) => e,
        Err(err) => {
            warn!(error = %err, "cannot build the event");
            return problem(
                Code::BadRequest,
                "The request cannot be represented as an event.",
            );
        }
    };
    drop(body);
    let trace_id = trace_id(&parts.headers);

    let outcome = match pool.invoke(request_id.clone(), event, trace_id) {
        Ok(rx) => rx.await.unwrap_or(Outcome {
            instance: None,
            cold: false,
            result: InvokeResult::Crashed,
        }),
        Err(Rejected::QueueFull) => {
            let mut r = problem(
                Code::ServiceUnavailable,
                "Every instance is busy and the queue is full; retry later.",
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
            return r;
        }
        Err(Rejected::ShuttingDown) => return shutting_down(),
        Err(Rejected::InitFailing) => return init_failed(),
    };
    fields.instance = outcome.instance;
    if outcome.instance.is_some() {
        fields.cold = Some(outcome.cold);
    }
    match outcome.result {
        InvokeResult::Response(payload) => match event::map_response(payload) {
            Ok(r) => r,
            Err(err) => {
                warn!(function = %pool.spec.name, %request_id, error = %err,
                    "cannot map the function's response");
                let detail = match err {
                    MapError::NotJson => "The function's response is not JSON.",
                    MapError::Malformed(_) => "The function's response is malformed.",
                };
                problem(Code::BadGateway, detail)
            }
        },
        InvokeResult::FunctionError => problem(Code::BadGateway, "The function returned an error."),
        InvokeResult::Timeout => problem(
            Code::GatewayTimeout,
            "The function did not answer within its timeout.",
        ),
        InvokeResult::Crashed => problem(
            Code::BadGateway,
            "The function's process ended during the invocation.",
        ),
        InvokeResult::InitFailed => init_failed(),
        InvokeResult::ShuttingDown => shutting_down(),
    }
}

/// Microseconds as a float, so milliseconds print with three decimals.
fn micros(d: Duration) -> f64 {
    u32::try_from(d.as_micros()).map_or(f64::from(u32::MAX), f64::from)
}

/// Reads the body; `None` once it exceeds [`MAX_BODY`].
async fn read_body(body: &mut Incoming) -> Result<Option<Bytes>, hyper::Error> {
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if first.as_ref().map_or(0, Bytes::len) + buf.len() + data.len() > MAX_BODY {
            return Ok(None);
        }
        // One chunk (the common case) is kept as is; more are joined.
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            None => buf.extend_from_slice(&data),
            Some(f) => {
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(Some(first.unwrap_or_else(|| buf.freeze())))
}

/// Reads and discards some of an oversized body before answering 413: a
/// client still sending when the connection closes would see a reset
/// instead of the answer. Bounded in bytes and time.
async fn drain(mut body: Incoming) {
    let mut left = DRAIN_MAX;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, Bytes::len);
            if n >= left {
                break;
            }
            left -= n;
        }
    })
    .await;
}

fn too_large() -> Response<Body> {
    let mut r = problem(
        Code::BodyTooLarge,
        "The request body exceeds the 6 MiB payload limit.",
    );
    // The rest of the body is not read: do not reuse the connection.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn init_failed() -> Response<Body> {
    problem(Code::BadGateway, "The function failed to initialize.")
}

fn shutting_down() -> Response<Body> {
    let mut r = problem(Code::ServiceUnavailable, "The service is shutting down.");
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    r
}

/// The client's X-Ray trace header if it sent a plausible one, else a fresh
/// `Root=1-{epoch hex}-{96 random bits}`, as API Gateway does.
fn trace_id(headers: &http::HeaderMap) -> String {
    if let Some(given) = headers
        .get("x-amzn-trace-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("Root=") && v.len() <= 256)
    {
        return given.to_owned();
    }
    let epoch = OffsetDateTime::now_utc().unix_timestamp();
    let random = Uuid::new_v4().simple().to_string();
    let root = random.get(..24).unwrap_or(&random);
    let parent = random.get(16..32).unwrap_or(&random);
    format!("Root=1-{epoch:08x}-{root};Parent={parent};Sampled=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_fresh_unless_the_client_sent_one() {
        let a = trace_id(&http::HeaderMap::new());
        let b = trace_id(&http::HeaderMap::new());
        assert!(a.starts_with("Root=1-") && a.contains(";Parent=") && a.ends_with(";Sampled=0"));
        assert_ne!(a, b);
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-amzn-trace-id",
            HeaderValue::from_static("Root=1-abc-def"),
        );
        assert_eq!(trace_id(&h), "Root=1-abc-def");
    }
}
