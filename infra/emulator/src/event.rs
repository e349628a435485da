//! Event mapping: an HTTP request becomes an API Gateway HTTP API payload 2.0
//! event (the `aws_lambda_events` type `lambda_http` reads), and a function's
//! answer becomes the HTTP response API Gateway would send.
//!
//! The event is serialised once, straight to the bytes `/next` hands out.

use std::collections::HashMap;
use std::net::IpAddr;

use aws_lambda_events::apigw::{
    ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext,
    ApiGatewayV2httpRequestContextHttpDescription,
};
use aws_lambda_events::query_map::QueryMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body_util::Full;
use serde::Deserialize;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::problem::Body;

/// The account id placed in events and ARNs: the one AWS documentation uses
/// in its examples, so nobody mistakes it for a real account.
pub const ACCOUNT_ID: &str = "123456789012";
/// The `apiId` placed in events.
pub const API_ID: &str = "emulator";

/// What the event needs to know beyond the request itself.
pub struct EventContext<'a> {
    /// API Gateway's `routeKey`, e.g. `POST /api/v1/users`.
    pub route_key: &'a str,
    /// `pathParameters`.
    pub path_parameters: HashMap<String, String>,
    /// `requestContext.requestId`.
    pub request_id: &'a str,
    /// The client's address (`requestContext.http.sourceIp`).
    pub source_ip: IpAddr,
    /// When the request arrived.
    pub now: OffsetDateTime,
}

/// Builds the serialised payload 2.0 event of a request.
pub fn build_event(
    parts: &http::request::Parts,
    body: &[u8],
    ctx: EventContext<'_>,
) -> Result<Bytes, serde_json::Error> {
    let mut headers = HeaderMap::with_capacity(parts.headers.keys_len());
    let mut cookies = Vec::new();
    for name in parts.headers.keys() {
        if name == header::COOKIE {
            // Payload 2.0 moves cookies out of the headers into their own
            // list, one entry per cookie.
            for value in parts.headers.get_all(name) {
                let text = String::from_utf8_lossy(value.as_bytes());
                cookies.extend(
                    text.split(';')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned),
                );
            }
            continue;
        }
        // Repeated headers are joined with commas, as API Gateway does; names
        // are already lower case in `http`.
        let mut joined = Vec::new();
        for (i, value) in parts.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                joined.push(b',');
            }
            joined.extend_from_slice(value.as_bytes());
        }
        // The event is JSON, so values must be UTF-8: replace what is not.
        let text = String::from_utf8_lossy(&joined);
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.insert(name.clone(), value);
        }
    }

    let raw_query = parts.uri.query().unwrap_or("");
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        query
            .entry(k.into_owned())
            .or_default()
            .push(v.into_owned());
    }

    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.parse::<http::uri::Authority>().is_ok())
        .unwrap_or("localhost");
    let domain_prefix = host.split(['.', ':']).next().unwrap_or(host);
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();

    let (body, is_base64_encoded) = if body.is_empty() {
        (None, false)
    } else {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        match std::str::from_utf8(body) {
            Ok(text) if content_type.is_some_and(is_text) => (Some(text.to_owned()), false),
            _ => (Some(BASE64.encode(body)), true),
        }
    };

    let mut http = ApiGatewayV2httpRequestContextHttpDescription::default();
    http.method = parts.method.clone();
    http.path = Some(parts.uri.path().to_owned());
    http.protocol = Some(protocol(parts.version).to_owned());
    http.source_ip = Some(ctx.source_ip.to_string());
    http.user_agent = Some(user_agent);

    let mut request_context = ApiGatewayV2httpRequestContext::default();
    request_context.route_key = Some(ctx.route_key.to_owned());
    request_context.account_id = Some(ACCOUNT_ID.to_owned());
    request_context.stage = Some("$default".to_owned());
    request_context.request_id = Some(ctx.request_id.to_owned());
    request_context.apiid = Some(API_ID.to_owned());
    request_context.domain_name = Some(host.to_owned());
    request_context.domain_prefix = Some(domain_prefix.to_owned());
    request_context.time = Some(api_gateway_time(ctx.now));
    request_context.time_epoch =
        i64::try_from(ctx.now.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
    request_context.http = http;

    let mut event = ApiGatewayV2httpRequest::default();
    // The type also models authorizer payloads; its top-level method is one
    // of those fields, kept equal to the real one so nothing reads `GET`.
    #[allow(deprecated)]
    {
        event.http_method = parts.method.clone();
    }
    event.version = Some("2.0".to_owned());
    event.route_key = Some(ctx.route_key.to_owned());
    event.raw_path = Some(parts.uri.path().to_owned());
    event.raw_query_string = Some(raw_query.to_owned());
    event.cookies = (!cookies.is_empty()).then_some(cookies);
    event.headers = headers;
    event.query_string_parameters = QueryMap::from(query);
    event.path_parameters = ctx.path_parameters;
    event.request_context = request_context;
    event.body = body;
    event.is_base64_encoded = is_base64_encoded;

    serde_json::to_vec(&event).map(Bytes::from)
}

/// Whether a body of this content type travels as text (else base64), as
/// API Gateway decides for HTTP APIs.
fn is_text(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/x-www-form-urlencoded"
                | "application/graphql"
                | "application/yaml"
                | "application/x-yaml"
        )
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// API Gateway's `requestContext.time`, e.g. `12/Mar/2020:19:03:58 +0000`.
pub fn api_gateway_time(now: OffsetDateTime) -> String {
    let format =
        format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
    now.to_offset(time::UtcOffset::UTC)
        .format(format)
        .unwrap_or_default()
}

/// Why a function's answer could not become an HTTP response.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// Not JSON at all.
    #[error("the function's answer is not JSON")]
    NotJson,
    /// A response object (it has `statusCode`) with wrong fields.
    #[error("the function's response object is malformed: {0}")]
    Malformed(String),
}

/// The payload 2.0 response object, leniently typed as API Gateway is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionResponse {
    status_code: Option<u16>,
    headers: Option<HashMap<String, serde_json::Value>>,
    multi_value_headers: Option<HashMap<String, Vec<serde_json::Value>>>,
    cookies: Option<Vec<String>>,
    body: Option<String>,
    is_base64_encoded: Option<bool>,
}

/// Maps a function's answer to the HTTP response.
///
/// An object with `statusCode` is a response object; anything else that is
/// JSON (a bare value, an object without `statusCode`) is the body of a 200
/// JSON response, as API Gateway infers for payload 2.0.
pub fn map_response(payload: Bytes) -> Result<Response<Body>, MapError> {
    let parsed = match serde_json::from_slice::<FunctionResponse>(&payload) {
        Ok(parsed) => parsed,
        Err(err) => {
            let value: serde_json::Value =
                serde_json::from_slice(&payload).map_err(|_| MapError::NotJson)?;
            if value.get("statusCode").is_some() {
                return Err(MapError::Malformed(err.to_string()));
            }
            return Ok(bare(payload));
        }
    };
    let Some(status) = parsed.status_code else {
        return Ok(bare(payload));
    };
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| (100..=599).contains(&s.as_u16()) && !s.is_informational())
        .ok_or_else(|| MapError::Malformed(format!("statusCode {status} is not usable")))?;

    let mut response = Response::new(Full::default());
    *response.status_mut() = status;
    let out = response.headers_mut();
    for (name, value) in parsed.headers.unwrap_or_default() {
        append_header(out, &name, &value, false)?;
    }
    for (name, values) in parsed.multi_value_headers.unwrap_or_default() {
        for value in values {
            append_header(out, &name, &value, true)?;
        }
    }
    for cookie in parsed.cookies.unwrap_or_default() {
        let value = HeaderValue::from_str(&cookie)
            .map_err(|_| MapError::Malformed("a cookie is not a valid header value".into()))?;
        out.append(header::SET_COOKIE, value);
    }
    let body = match (parsed.body, parsed.is_base64_encoded.unwrap_or(false)) {
        (None, _) => Bytes::new(),
        (Some(b), false) => Bytes::from(b),
        (Some(b), true) => Bytes::from(
            BASE64
                .decode(b.as_bytes())
                .map_err(|e| MapError::Malformed(format!("body is not base64: {e}")))?,
        ),
    };
    *response.body_mut() = Full::new(body);
    Ok(response)
}

fn bare(payload: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(payload));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn append_header(
    out: &mut HeaderMap,
    name: &str,
    value: &serde_json::Value,
    multi: bool,
) -> Result<(), MapError> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| MapError::Malformed(format!("header name {name:?} is invalid")))?;
    // Framing is the emulator's business: a function's own length or
    // connection headers would corrupt the response.
    if is_hop_by_hop(&name) {
        return Ok(());
    }
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        _ => {
            return Err(MapError::Malformed(format!(
                "header {name} must be a string, number or boolean"
            )));
        }
    };
    let value = HeaderValue::from_str(&text)
        .map_err(|_| MapError::Malformed(format!("header {name} has an invalid value")))?;
    if multi || name == header::SET_COOKIE {
        out.append(name, value);
    } else {
        out.insert(name, value);
    }
    Ok(())
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "upgrade"
            | "te"
            | "trailer"
            | "proxy-connection"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    fn event_of(req: http::Request<()>, body: &[u8]) -> serde_json::Value {
        let ctx = EventContext {
            route_key: "POST /things/{id}",
            path_parameters: HashMap::from([("id".to_owned(), "42".to_owned())]),
            request_id: "req-1",
            source_ip: "192.0.2.7".parse().unwrap(),
            now: OffsetDateTime::from_unix_timestamp_nanos(1_584_039_838_123_000_000).unwrap(),
        };
        serde_json::from_slice(&build_event(&parts(req), body, ctx).unwrap()).unwrap()
    }

    #[test]
    fn the_event_carries_every_payload_2_0_field() {
        let req = http::Request::post("/things/42?a=1&a=2&b=x%20y")
            .header("Host", "api.example.com")
            .header("User-Agent", "curl/8")
            .header("X-Multi", "one")
            .header("x-multi", "two")
            .header("Cookie", "c1=v1; c2=v2")
            .header("Content-Type", "application/json")
            .body(())
            .unwrap();
        let e = event_of(req, br#"{"k":"v"}"#);
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["routeKey"], "POST /things/{id}");
        assert_eq!(e["rawPath"], "/things/42");
        assert_eq!(e["rawQueryString"], "a=1&a=2&b=x%20y");
        assert_eq!(e["cookies"], serde_json::json!(["c1=v1", "c2=v2"]));
        assert_eq!(e["headers"]["x-multi"], "one,two");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["queryStringParameters"]["a"], "1,2");
        assert_eq!(e["queryStringParameters"]["b"], "x y");
        assert_eq!(e["pathParameters"]["id"], "42");
        let rc = &e["requestContext"];
        assert_eq!(rc["http"]["method"], "POST");
        assert_eq!(rc["http"]["path"], "/things/42");
        assert_eq!(rc["http"]["protocol"], "HTTP/1.1");
        assert_eq!(rc["http"]["sourceIp"], "192.0.2.7");
        assert_eq!(rc["http"]["userAgent"], "curl/8");
        assert_eq!(rc["requestId"], "req-1");
        assert_eq!(rc["stage"], "$default");
        assert_eq!(rc["time"], "12/Mar/2020:19:03:58 +0000");
        assert_eq!(rc["timeEpoch"], 1_584_039_838_123_i64);
        assert_eq!(rc["domainName"], "api.example.com");
        assert_eq!(rc["domainPrefix"], "api");
        assert_eq!(rc["accountId"], ACCOUNT_ID);
        assert_eq!(rc["apiId"], API_ID);
        assert_eq!(e["body"], r#"{"k":"v"}"#);
        assert_eq!(e["isBase64Encoded"], false);
        // lambda_http's own type reads it back.
        let back: ApiGatewayV2httpRequest = serde_json::from_value(e).unwrap();
        assert_eq!(back.request_context.http.method, http::Method::POST);
    }

    #[test]
    fn binary_or_untyped_bodies_are_base64() {
        let req = http::Request::post("/x")
            .header("Content-Type", "application/octet-stream")
            .body(())
            .unwrap();
        let e = event_of(req, &[0, 159, 146, 150]);
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], BASE64.encode([0, 159, 146, 150]));
        let e = event_of(http::Request::get("/x").body(()).unwrap(), b"");
        assert!(e.get("body").is_none());
        assert_eq!(e["isBase64Encoded"], false);
    }

    async fn body_of(r: Response<Body>) -> Bytes {
        r.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_response_object_maps_status_headers_cookies_and_base64_body() {
        let payload = serde_json::json!({
            "statusCode": 201,
            "headers": {"content-type": "application/octet-stream", "x-n": 5, "content-length": "999"},
            "multiValueHeaders": {"x-multi": ["a", "b"]},
            "cookies": ["a=1; Path=/", "b=2"],
            "body": BASE64.encode([1, 2, 3]),
            "isBase64Encoded": true
        });
        let r = map_response(Bytes::from(payload.to_string())).unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-n"], "5");
        assert!(r.headers().get("content-length").is_none());
        let multi: Vec<_> = r.headers().get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1; Path=/", "b=2"]);
        assert_eq!(&body_of(r).await[..], &[1, 2, 3]);
    }

    #[tokio::test]
    async fn bare_values_and_objects_without_status_are_200_json() {
        for bare in [r#"{"hello":"world"}"#, r#""text""#, "[1,2]", "42"] {
            let r = map_response(Bytes::from(bare)).unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "application/json");
            assert_eq!(&body_of(r).await[..], bare.as_bytes());
        }
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert!(matches!(
            map_response(Bytes::from("not json")),
            Err(MapError::NotJson)
        ));
        assert!(matches!(
            map_response(Bytes::from(r#"{"statusCode":"abc"}"#)),
            Err(MapError::Malformed(_))
        ));
        assert!(matches!(
            map_response(Bytes::from(r#"{"statusCode":700}"#)),
            Err(MapError::Malformed(_))
        ));
        assert!(matches!(
            map_response(Bytes::from(
                r#"{"statusCode":200,"body":"%%","isBase64Encoded":true}"#
            )),
            Err(MapError::Malformed(_))
        ));
    }
}
