//! The Lambda Runtime API, on an internal loopback listener.
//!
//! Each instance has its own base path, `/i/{function}/{instance}`, given to
//! it in `AWS_LAMBDA_RUNTIME_API`; the runtime appends the standard paths:
//!
//! | Method | Path (after the base) | Answer |
//! |---|---|---|
//! | GET | `/2018-06-01/runtime/invocation/next` | 200 + event, when there is one |
//! | POST | `/2018-06-01/runtime/invocation/{id}/response` | 202, or 403 for an unknown or finished id |
//! | POST | `/2018-06-01/runtime/invocation/{id}/error` | 202, or 403 |
//! | POST | `/2018-06-01/runtime/init/error` | 202, or 403 after initialisation |

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::pool::{Pool, RuntimeError};
use crate::problem::Body;

/// How long `/next` of a stopping instance is held before it is refused:
/// well beyond the SIGTERM-to-SIGKILL grace given to children.
const STOPPING_POLL_HOLD: std::time::Duration = std::time::Duration::from_secs(60);

/// Header names of the Runtime API.
pub mod headers {
    /// The invocation's id.
    pub const REQUEST_ID: &str = "lambda-runtime-aws-request-id";
    /// Epoch milliseconds by which the function must answer.
    pub const DEADLINE_MS: &str = "lambda-runtime-deadline-ms";
    /// The ARN of the function invoked.
    pub const FUNCTION_ARN: &str = "lambda-runtime-invoked-function-arn";
    /// The X-Ray trace header.
    pub const TRACE_ID: &str = "lambda-runtime-trace-id";
    /// The error type of a posted error.
    pub const ERROR_TYPE: &str = "lambda-runtime-function-error-type";
}

/// Lambda's limit on a synchronous response payload (6 MB), with room for
/// the JSON envelope's overhead of base64.
const MAX_RESPONSE: usize = 6 * 1024 * 1024 + 64 * 1024;
/// Error documents are small; anything bigger is cut to this.
const MAX_ERROR: usize = 256 * 1024;
const API_PREFIX: &str = "/2018-06-01/runtime";

/// Serves the Runtime API for these pools until the process ends.
pub async fn serve(listener: TcpListener, pools: Arc<HashMap<String, Arc<Pool>>>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // No header timeout: idle keep-alive connections between invocations and
    // long polls are normal here, and every client is one of our children.
    http.keep_alive(true);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(error = %err, "runtime API accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let pools = pools.clone();
        let conn = http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let pools = pools.clone();
                async move { Ok::<_, Infallible>(handle(&pools, req).await) }
            }),
        );
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                debug!(error = %err, "runtime API connection ended");
            }
        });
    }
}

async fn handle(pools: &HashMap<String, Arc<Pool>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let Some((pool, instance, rest)) = parse_base(pools, &path) else {
        return error(
            StatusCode::NOT_FOUND,
            "UnknownPath",
            "no such runtime API path",
        );
    };
    let Some(rest) = rest.strip_prefix(API_PREFIX) else {
        return error(
            StatusCode::NOT_FOUND,
            "UnknownPath",
            "no such runtime API path",
        );
    };
    let method = req.method().clone();
    match (method, rest) {
        (Method::GET, "/invocation/next") => match pool.next(instance).await {
            Ok(a) => {
                let mut response = Response::new(Full::new(a.event));
                let h = response.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                insert(h, headers::REQUEST_ID, &a.request_id);
                insert(h, headers::DEADLINE_MS, &a.deadline_ms.to_string());
                insert(h, headers::FUNCTION_ARN, &pool.arn);
                insert(h, headers::TRACE_ID, &a.trace_id);
                response
            }
            Err(RuntimeError::Stopping) => {
                // Lambda never answers `/next` of an environment that is
                // shutting down: the process gets SIGTERM, then SIGKILL. An
                // answer without an event would make the Rust runtime panic
                // ("missing lambda-runtime-aws-request-id header") in a
                // process that may not have seen its SIGTERM yet. So the poll
                // stays open until the process is gone; the bound only keeps
                // a connection nobody closes from pinning this task forever.
                tokio::time::sleep(STOPPING_POLL_HOLD).await;
                refused(RuntimeError::Stopping)
            }
            Err(err) => refused(err),
        },
        (Method::POST, "/init/error") => match pool.init_error(instance) {
            Ok(()) => accepted(),
            Err(err) => refused(err),
        },
        (Method::POST, rest) => {
            let Some((request_id, kind)) = rest
                .strip_prefix("/invocation/")
                .and_then(|r| r.rsplit_once('/'))
            else {
                return error(
                    StatusCode::NOT_FOUND,
                    "UnknownPath",
                    "no such runtime API path",
                );
            };
            let is_error = match kind {
                "response" => false,
                "error" => true,
                _ => {
                    return error(
                        StatusCode::NOT_FOUND,
                        "UnknownPath",
                        "no such runtime API path",
                    );
                }
            };
            let error_type = req
                .headers()
                .get(headers::ERROR_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let limit = if is_error { MAX_ERROR } else { MAX_RESPONSE };
            let body = match Limited::new(req.into_body(), limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) if !is_error => {
                    // Too large (or cut off): the invocation fails, as in Lambda.
                    let _ = pool.complete(
                        instance,
                        request_id,
                        Err(Bytes::from_static(
                            br#"{"errorType":"Function.ResponseSizeTooLarge","errorMessage":"Response payload size exceeded maximum allowed payload size"}"#,
                        )),
                    );
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "RequestEntityTooLarge",
                        "response payload too large",
                    );
                }
                Err(_) => Bytes::from_static(
                    br#"{"errorType":"Unknown","errorMessage":"error document too large"}"#,
                ),
            };
            if is_error {
                // The type only: the message may carry user data.
                warn!(function = %pool.spec.name, instance, %request_id, error_type = %error_type,
                    "function returned an error");
            }
            let result = if is_error { Err(body) } else { Ok(body) };
            match pool.complete(instance, request_id, result) {
                Ok(()) => accepted(),
                Err(err) => refused(err),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "UnknownPath",
            "no such runtime API path",
        ),
    }
}

/// Splits `/i/{function}/{instance}{rest}`.
fn parse_base<'a>(
    pools: &'a HashMap<String, Arc<Pool>>,
    path: &'a str,
) -> Option<(&'a Arc<Pool>, u64, &'a str)> {
    let rest = path.strip_prefix("/i/")?;
    let (function, rest) = rest.split_once('/')?;
    let (instance, rest) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let pool = pools.get(function)?;
    Some((pool, instance.parse().ok()?, rest))
}

fn insert(h: &mut http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn accepted() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(br#"{"status":"OK"}"#)));
    *r.status_mut() = StatusCode::ACCEPTED;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn refused(err: RuntimeError) -> Response<Body> {
    let (status, kind) = match err {
        RuntimeError::UnknownRequest => (StatusCode::FORBIDDEN, "InvalidRequestID"),
        RuntimeError::AlreadyInitialised => (StatusCode::FORBIDDEN, "InvalidStateTransition"),
        RuntimeError::UnknownInstance => (StatusCode::FORBIDDEN, "UnknownInstance"),
        // The instance is being stopped: its poll ends here, without an event.
        RuntimeError::Stopping => (StatusCode::GONE, "InstanceStopping"),
    };
    error(status, kind, &err.to_string())
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "errorType": kind, "errorMessage": message });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
