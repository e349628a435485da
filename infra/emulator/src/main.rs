//! `emulator`: serves the service's Lambda functions over HTTP, as API
//! Gateway's HTTP API (payload 2.0) in front of Lambda would, by running each
//! function binary unmodified as child processes driven through the Lambda
//! Runtime API.
//!
//! Startup: load and validate the routes file, open the internal Runtime API
//! listener, start each function's warm instances, then serve HTTP. Shutdown
//! (SIGTERM/SIGINT): stop accepting, let in-flight requests finish within the
//! grace period, stop the children (SIGTERM, then SIGKILL), exit 0.

mod config;
mod event;
mod front;
mod health;
mod pool;
mod problem;
mod process;
mod routes;
mod runtime_api;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::config::{Cli, Settings};
use crate::front::{App, FrontSettings};
use crate::pool::{Pool, PoolSettings, RuntimeApiAddr};
use crate::process::{Launch, Tracker};
use crate::routes::RouteTable;

/// Time the children get to exit after SIGTERM at shutdown, before SIGKILL
/// (their supervisors escalate on their own after [`process::TERM_GRACE`]).
const CHILDREN_STOP_WAIT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.json_logs());
    let settings = match cli.settings() {
        Ok(s) => s,
        Err(err) => {
            error!(error = %err, "invalid settings");
            return ExitCode::from(2);
        }
    };
    let table = match RouteTable::load(&settings.routes) {
        Ok(t) => t,
        Err(err) => {
            error!(error = %err, "invalid routes file");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        info!(
            routes = %settings.routes.display(),
            functions = table.functions.len(),
            "routes file is valid"
        );
        return ExitCode::SUCCESS;
    }
    for f in &table.functions {
        let program = settings.bin_dir.join(&f.binary);
        if !program.is_file() {
            error!(function = %f.name, program = %program.display(),
                "function binary not found (set EMULATOR_BIN_DIR or --bin-dir)");
            return ExitCode::from(2);
        }
    }
    // One thread: the emulator only moves bytes between sockets and pipes,
    // the work happens in the function processes. With a multi-threaded
    // runtime every hand-off between a client's connection and an
    // instance's woke the other worker (a futex wake and, on a VM, an
    // inter-processor interrupt); `make bench` measured ~40 % more JWKS
    // requests/s on 2 cores with one thread (docs/benchmarks.md).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(err) => {
            error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings, table)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = %err, "emulator failed");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("EMULATOR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    if json {
        builder.json().with_current_span(false).init();
    } else {
        builder.with_ansi(false).init();
    }
}

async fn run(settings: Settings, table: RouteTable) -> std::io::Result<()> {
    let started = Instant::now();
    // Registered first: a SIGTERM during start-up still means a clean stop.
    let mut terms = signal(SignalKind::terminate())?;
    let mut ints = signal(SignalKind::interrupt())?;
    let tracker = Tracker::default();
    process::start_orphan_reaper(tracker.clone());

    let runtime_listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let runtime_addr = RuntimeApiAddr(runtime_listener.local_addr()?);
    let changed = Arc::new(Notify::new());
    let pool_settings = PoolSettings {
        queue_depth: settings.queue_depth,
        idle_timeout: settings.idle_timeout,
    };
    let pools: Vec<Arc<Pool>> = table
        .functions
        .iter()
        .map(|f| {
            let launch = Launch {
                function: Arc::from(f.name.as_str()),
                program: settings.bin_dir.join(&f.binary),
                env: lambda_env(f),
            };
            Pool::new(
                f.clone(),
                launch,
                &pool_settings,
                runtime_addr,
                tracker.clone(),
                changed.clone(),
            )
        })
        .collect();
    let by_name: HashMap<String, Arc<Pool>> = pools
        .iter()
        .map(|p| (p.spec.name.clone(), p.clone()))
        .collect();
    tokio::spawn(runtime_api::serve(runtime_listener, Arc::new(by_name)));

    let listener = TcpListener::bind(SocketAddr::from((settings.bind, settings.port))).await?;
    info!(addr = %listener.local_addr()?, runtime_api = %runtime_addr.0, "listening");
    for p in &pools {
        p.start();
    }
    let app = Arc::new(App {
        table,
        pools: pools.clone(),
        stopping: false.into(),
    });
    tokio::spawn(announce_ready(pools.clone(), changed.clone(), started));

    let (stop, stopped) = watch::channel(false);
    let front = tokio::spawn(front::serve(
        listener,
        app.clone(),
        FrontSettings {
            header_timeout: settings.header_timeout,
            grace: settings.shutdown_grace,
        },
        stopped,
    ));

    let name = tokio::select! {
        _ = terms.recv() => "SIGTERM",
        _ = ints.recv() => "SIGINT",
    };
    info!(
        signal = name,
        grace_s = settings.shutdown_grace.as_secs_f64(),
        "shutting down"
    );
    app.stopping.store(true, Ordering::Relaxed);
    let _ = stop.send(true);
    tokio::select! {
        _ = front => {}
        _ = terms.recv() => warn!("second signal: not waiting for in-flight requests"),
        _ = ints.recv() => warn!("second signal: not waiting for in-flight requests"),
    }

    for p in &pools {
        p.stop_all();
    }
    if !wait_for_exit(&pools, &changed, CHILDREN_STOP_WAIT).await {
        warn!("instances still running; sending SIGKILL");
        for p in &pools {
            p.kill_all();
        }
        wait_for_exit(&pools, &changed, Duration::from_secs(2)).await;
    }
    info!("stopped");
    Ok(())
}

/// The Lambda environment of a function's instances (the instance-specific
/// part is added at spawn time).
fn lambda_env(f: &routes::FunctionSpec) -> Vec<(String, String)> {
    let mut env = vec![
        ("AWS_LAMBDA_FUNCTION_NAME".to_owned(), f.name.clone()),
        (
            "AWS_LAMBDA_FUNCTION_VERSION".to_owned(),
            "$LATEST".to_owned(),
        ),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".to_owned(),
            f.memory_mb.to_string(),
        ),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME".to_owned(),
            format!("/aws/lambda/{}", f.name),
        ),
        (
            "AWS_LAMBDA_INITIALIZATION_TYPE".to_owned(),
            "on-demand".to_owned(),
        ),
    ];
    env.extend(f.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Logs once when every function has a warm instance.
async fn announce_ready(pools: Vec<Arc<Pool>>, changed: Arc<Notify>, started: Instant) {
    loop {
        let notified = changed.notified();
        if health::all_ready(&pools) {
            info!(
                startup_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "ready"
            );
            return;
        }
        // Also poll: a notification can slip between the check and the wait.
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
    }
}

/// Waits until every instance has exited; false if time ran out.
async fn wait_for_exit(pools: &[Arc<Pool>], changed: &Notify, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let notified = changed.notified();
        if pools.iter().all(|p| p.processes() == 0) {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return pools.iter().all(|p| p.processes() == 0);
        }
    }
}
