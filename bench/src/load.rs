//! A closed-loop HTTP/1.1 load generator: `connections` keep-alive
//! connections, each sending its next request as soon as the previous
//! answer is in, for a fixed time (or a fixed number of requests). Every
//! latency is recorded, so percentiles and the chart are exact rather than
//! estimated from a histogram.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::Samples;

/// Builds the body of the `n`-th request (e.g. a fresh email per
/// registration).
pub type BodyFn = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;

/// What to send.
#[derive(Clone)]
pub struct Target {
    /// The server.
    pub addr: SocketAddr,
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// The body of request `n`, if any (sent as JSON).
    pub body: Option<BodyFn>,
}

impl Target {
    /// A GET of `path`.
    pub fn get(addr: SocketAddr, path: &str) -> Self {
        Self {
            addr,
            method: Method::GET,
            path: path.to_owned(),
            body: None,
        }
    }

    /// A JSON POST to `path`.
    pub fn post(addr: SocketAddr, path: &str, body: BodyFn) -> Self {
        Self {
            addr,
            method: Method::POST,
            path: path.to_owned(),
            body: Some(body),
        }
    }
}

/// How long and how hard.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Concurrent connections (closed-loop clients).
    pub connections: usize,
    /// Time before recording starts (connections open, pools warm up).
    pub warmup: Duration,
    /// Time recorded.
    pub duration: Duration,
    /// Stop after this many requests in all (recorded or not), if set.
    pub max_requests: Option<u64>,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Latencies of the requests completed in the recorded window.
    pub latencies: Samples,
    /// Responses per status code (all requests, warm-up included).
    pub statuses: BTreeMap<u16, u64>,
    /// Transport errors (connection refused, reset, ...).
    pub errors: u64,
    /// Length of the recorded window.
    pub window: Duration,
}

impl Outcome {
    /// Completed requests per second in the recorded window.
    pub fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }

    /// Responses with this status.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Responses or errors other than `expected`.
    pub fn unexpected(&self, expected: u16) -> u64 {
        self.errors
            + self
                .statuses
                .iter()
                .filter(|(s, _)| **s != expected)
                .map(|(_, n)| n)
                .sum::<u64>()
    }
}

struct Client {
    sender: SendRequest<Full<Bytes>>,
}

async fn connect(addr: SocketAddr) -> Result<Client> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped or the server
        // closes it; either way the next request reconnects.
        let _ = conn.await;
    });
    Ok(Client { sender })
}

struct Worker {
    latencies: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

/// Runs `plan` against `target`.
pub async fn run(target: &Target, plan: Plan) -> Result<Outcome> {
    let started = Instant::now();
    let record_from = started + plan.warmup;
    let end = record_from + plan.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        let target = target.clone();
        let issued = issued.clone();
        tasks.push(tokio::spawn(async move {
            worker(&target, record_from, end, plan.max_requests, &issued).await
        }));
    }
    let mut outcome = Outcome::default();
    let mut all = Vec::new();
    for task in tasks {
        let w = task.await.context("load worker failed")?;
        all.extend_from_slice(&w.latencies);
        for (s, n) in w.statuses {
            *outcome.statuses.entry(s).or_default() += n;
        }
        outcome.errors += w.errors;
    }
    let finished = Instant::now().min(end);
    outcome.window = finished.saturating_duration_since(record_from);
    if outcome.window.is_zero() {
        outcome.window = Duration::from_millis(1);
    }
    outcome.latencies = Samples::from_micros(all);
    Ok(outcome)
}

/// Most consecutive transport errors a connection tolerates before it
/// gives up (a server that is gone should end the run, not spin it).
const MAX_CONSECUTIVE_ERRORS: u32 = 50;

async fn worker(
    target: &Target,
    record_from: Instant,
    end: Instant,
    max_requests: Option<u64>,
    issued: &AtomicU64,
) -> Worker {
    let mut w = Worker {
        latencies: Vec::with_capacity(4096),
        statuses: BTreeMap::new(),
        errors: 0,
    };
    let mut client: Option<Client> = None;
    let mut consecutive_errors = 0;
    let host = target.addr.to_string();
    while Instant::now() < end {
        let n = issued.fetch_add(1, Ordering::Relaxed);
        if max_requests.is_some_and(|max| n >= max) {
            break;
        }
        if client.is_none() {
            match connect(target.addr).await {
                Ok(c) => client = Some(c),
                Err(_) => {
                    w.errors += 1;
                    consecutive_errors += 1;
                    if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        let mut builder = Request::builder()
            .method(target.method.clone())
            .uri(target.path.as_str())
            .header(header::HOST, host.as_str());
        let body = match &target.body {
            Some(f) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                f(n)
            }
            None => Bytes::new(),
        };
        let Ok(request) = builder.body(Full::new(body)) else {
            w.errors += 1;
            break;
        };
        let sent = Instant::now();
        let result = async {
            c.sender.ready().await?;
            let response = c.sender.send_request(request).await?;
            let status = response.status().as_u16();
            let close = response
                .headers()
                .get(header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>((status, close))
        }
        .await;
        let done = Instant::now();
        match result {
            Ok((status, close)) => {
                consecutive_errors = 0;
                *w.statuses.entry(status).or_default() += 1;
                if sent >= record_from && done <= end {
                    w.latencies
                        .push(u64::try_from((done - sent).as_micros()).unwrap_or(u64::MAX));
                }
                if close {
                    client = None;
                }
            }
            Err(_) => {
                w.errors += 1;
                consecutive_errors += 1;
                client = None;
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                    break;
                }
            }
        }
    }
    w
}

/// One request, for set-up steps and single-shot timings: status, body and
/// latency, on a fresh connection.
pub async fn once(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Bytes>,
) -> Result<(u16, Bytes, Duration)> {
    let mut c = connect(addr).await?;
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let request = builder.body(Full::new(body.unwrap_or_default()))?;
    let sent = Instant::now();
    let response = c.sender.send_request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, bytes, sent.elapsed()))
}
