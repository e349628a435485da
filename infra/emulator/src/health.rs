//! Health endpoints under the reserved `/_emulator/` prefix, for the
//! platform's liveness and readiness probes.
//!
//! Live: the emulator answers HTTP. Ready: every function has a warm
//! instance and the emulator is not shutting down.

use std::sync::Arc;

use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::json;

use crate::pool::Pool;
use crate::problem::{self, Body, Code};

/// Liveness probe path.
pub const LIVE: &str = "/_emulator/health/live";
/// Readiness probe path.
pub const READY: &str = "/_emulator/health/ready";

/// Answers a request under `/_emulator/`.
pub fn handle(method: &Method, path: &str, pools: &[Arc<Pool>], stopping: bool) -> Response<Body> {
    if path != LIVE && path != READY {
        return problem::problem(Code::NotFound, "No such emulator endpoint.");
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = problem::problem(Code::MethodNotAllowed, "Health endpoints answer GET only.");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == LIVE {
        return problem::json(StatusCode::OK, &json!({ "status": "live" }));
    }
    let functions: serde_json::Map<String, serde_json::Value> = pools
        .iter()
        .map(|p| {
            (
                p.spec.name.clone(),
                serde_json::to_value(p.status()).unwrap_or_default(),
            )
        })
        .collect();
    let ready = !stopping && functions.values().all(|f| f["ready"] == true);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    problem::json(
        status,
        &json!({
            "status": if ready { "ready" } else if stopping { "stopping" } else { "not_ready" },
            "functions": functions,
        }),
    )
}

/// Whether every function is ready.
pub fn all_ready(pools: &[Arc<Pool>]) -> bool {
    pools.iter().all(|p| p.is_ready())
}
