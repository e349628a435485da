//! RFC 9457 `application/problem+json` answers for what the emulator itself
//! refuses or fails (the functions' own errors pass through untouched), in
//! the same shape and `code` vocabulary as the service's (SPEC §3.4).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

/// The body type of every response the emulator sends.
pub type Body = Full<Bytes>;

/// Stable error codes of the emulator's own answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// No route for the path.
    NotFound,
    /// The path exists, the method does not.
    MethodNotAllowed,
    /// Body above the 6 MiB Lambda payload limit.
    BodyTooLarge,
    /// Queue full, shutting down or not ready.
    ServiceUnavailable,
    /// The function did not answer within its timeout.
    GatewayTimeout,
    /// The function crashed, failed to start or answered nonsense.
    BadGateway,
    /// The request itself could not be read.
    BadRequest,
    /// The client was too slow sending its body.
    RequestTimeout,
}

impl Code {
    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Code::NotFound => (StatusCode::NOT_FOUND, "Not Found", "NOT_FOUND"),
            Code::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed",
                "METHOD_NOT_ALLOWED",
            ),
            Code::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload Too Large",
                "BODY_TOO_LARGE",
            ),
            Code::ServiceUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                "SERVICE_UNAVAILABLE",
            ),
            Code::GatewayTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "Gateway Timeout",
                "GATEWAY_TIMEOUT",
            ),
            Code::BadGateway => (StatusCode::BAD_GATEWAY, "Bad Gateway", "BAD_GATEWAY"),
            Code::BadRequest => (StatusCode::BAD_REQUEST, "Bad Request", "BAD_REQUEST"),
            Code::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "Request Timeout",
                "REQUEST_TIMEOUT",
            ),
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    code: &'static str,
}

/// Builds a problem response.
pub fn problem(code: Code, detail: &str) -> Response<Body> {
    let (status, title, code) = code.parts();
    let body = serde_json::to_vec(&Problem {
        kind: "about:blank",
        title,
        status: status.as_u16(),
        detail,
        code,
    })
    .unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// Builds a plain JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
