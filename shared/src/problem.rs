//! Every error a client can see, mapped to an RFC 9457 problem response in
//! exactly one place, with the stable `code` vocabulary of SPEC §3.4. No
//! body ever carries a cause chain, a store message, a key or a password:
//! causes go to the log, once, with the request id.

use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use serde::Serialize;

use crate::domain::FieldError;

/// Media type of problem details (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answered to the client.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiError {
    /// 400: the body is not JSON, has wrong types or missing fields, or a
    /// value fails validation.
    InvalidBody(Vec<FieldError>),
    /// 413: the body is over the limit.
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 415: the content type is not JSON.
    UnsupportedMediaType,
    /// 405: the function was invoked with another method than its route's.
    MethodNotAllowed {
        /// The method the route takes.
        allow: &'static str,
    },
    /// 409: the normalized email is registered already.
    EmailTaken,
    /// 401: unknown email or wrong password — deliberately one answer.
    LoginInvalid,
    /// 403: right password, disabled account.
    AccountInactive,
    /// 503: the store could not be reached; nothing was written.
    ServiceUnavailable,
    /// 500: a fault on our side that is not the store's (hashing, signing).
    Internal,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidBody(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::EmailTaken => StatusCode::CONFLICT,
            Self::LoginInvalid => StatusCode::UNAUTHORIZED,
            Self::AccountInactive => StatusCode::FORBIDDEN,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidBody(_) => "INVALID_BODY",
            Self::BodyTooLarge { .. } => "BODY_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::EmailTaken => "EMAIL_TAKEN",
            Self::LoginInvalid => "LOGIN_INVALID",
            Self::AccountInactive => "ACCOUNT_INACTIVE",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::Internal => "INTERNAL_ERROR",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::InvalidBody(_) => "The request body is not valid; see errors.".into(),
            Self::BodyTooLarge { limit } => {
                format!("The request body is larger than {} KiB.", limit / 1024)
            }
            Self::UnsupportedMediaType => {
                "The request body must be JSON (Content-Type: application/json).".into()
            }
            Self::MethodNotAllowed { allow } => format!("This resource only accepts {allow}."),
            Self::EmailTaken => "An account with this email address already exists.".into(),
            Self::LoginInvalid => "The email address or password is not correct.".into(),
            Self::AccountInactive => "This account has been disabled.".into(),
            Self::ServiceUnavailable => {
                "The service is temporarily unavailable; nothing was changed. Try again shortly."
                    .into()
            }
            Self::Internal => "The request could not be completed.".into(),
        }
    }

    /// The problem+json response. `Cache-Control: no-store`, since errors
    /// of an authentication service are about one request only.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let detail = self.detail();
        let errors = match &self {
            Self::InvalidBody(errors) => Some(errors.as_slice()),
            _ => None,
        };
        let problem = Problem {
            type_: "about:blank",
            // RFC 9457 §4.2.1: with about:blank, the title is the status phrase.
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: &detail,
            code: self.code(),
            errors,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = Response::new(Body::Binary(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Self::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            Self::ServiceUnavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn body(response: &Response<Body>) -> Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }

    #[test]
    fn problems_are_rfc9457_with_a_stable_code() {
        let response = ApiError::LoginInvalid.into_response();
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(
            body(&response),
            json!({
                "type": "about:blank",
                "title": "Unauthorized",
                "status": 401,
                "detail": "The email address or password is not correct.",
                "code": "LOGIN_INVALID",
            })
        );
    }

    #[test]
    fn validation_problems_list_each_field() {
        let errors = vec![FieldError {
            field: "email",
            message: "must contain exactly one '@'".into(),
        }];
        let response = ApiError::InvalidBody(errors).into_response();
        let b = body(&response);
        assert_eq!(b["status"], 400);
        assert_eq!(b["code"], "INVALID_BODY");
        assert_eq!(
            b["errors"],
            json!([{"field": "email", "message": "must contain exactly one '@'"}])
        );
    }

    #[test]
    fn every_code_has_its_status() {
        let cases = [
            (
                ApiError::BodyTooLarge { limit: 65536 },
                413,
                "BODY_TOO_LARGE",
            ),
            (
                ApiError::UnsupportedMediaType,
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            ),
            (
                ApiError::MethodNotAllowed { allow: "POST" },
                405,
                "METHOD_NOT_ALLOWED",
            ),
            (ApiError::EmailTaken, 409, "EMAIL_TAKEN"),
            (ApiError::AccountInactive, 403, "ACCOUNT_INACTIVE"),
            (ApiError::ServiceUnavailable, 503, "SERVICE_UNAVAILABLE"),
            (ApiError::Internal, 500, "INTERNAL_ERROR"),
        ];
        for (error, status, code) in cases {
            let response = error.into_response();
            assert_eq!(response.status(), status);
            let b = body(&response);
            assert_eq!(b["status"], status);
            assert_eq!(b["code"], code);
            assert!(b.get("errors").is_none());
        }
    }

    #[test]
    fn method_not_allowed_names_the_method_and_unavailable_says_when_to_retry() {
        let r = ApiError::MethodNotAllowed { allow: "GET" }.into_response();
        assert_eq!(r.headers()[ALLOW], "GET");
        let r = ApiError::ServiceUnavailable.into_response();
        assert_eq!(r.headers()[RETRY_AFTER], "1");
    }
}
