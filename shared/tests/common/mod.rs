//! Helpers shared by the library's integration tests: a fresh table on the
//! real DynamoDB-compatible endpoint, keys, and API Gateway events.

#![allow(dead_code)]
// Test helpers fail the test that calls them, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lambda_http::Request;
use serde_json::json;
use users::store::dynamo::DynamoStore;

/// The endpoint `make test` started, or a clear failure.
pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!(
            "these tests need a DynamoDB-compatible endpoint in AWS_ENDPOINT_URL; \
             run them with `make test` (which starts moto), or start moto yourself \
             (`.venv/bin/moto_server -p 4566`) and export AWS_ENDPOINT_URL=http://127.0.0.1:4566 \
             AWS_REGION=eu-central-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test"
        )
    })
}

/// A store on a new, empty table of its own.
pub async fn fresh_store() -> DynamoStore {
    let table = format!("users-test-{}", uuid::Uuid::new_v4().simple());
    let store = DynamoStore::connect_to(&table, &endpoint())
        .await
        .expect("store config");
    assert!(store.create_table_if_missing().await.expect("create table"));
    store
}

/// A store whose endpoint refuses connections: a loopback port that was
/// free a moment ago.
pub async fn unreachable_store() -> DynamoStore {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    DynamoStore::connect_to("users-unreachable", &format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
}

/// A test-only key from `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// An API Gateway HTTP API (payload 2.0) event as API Gateway sends it.
pub fn apigw_event(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&str>,
) -> serde_json::Value {
    let mut headers = json!({
        "accept": "*/*",
        "host": "abc123.execute-api.eu-central-1.amazonaws.com",
        "user-agent": "curl/8.5.0",
        "x-amzn-trace-id": "Root=1-6750a2c4-3b2e5c1d7f0a9b8c6d4e2f10",
        "x-forwarded-for": "203.0.113.7",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https"
    });
    if let Some(ct) = content_type {
        headers["content-type"] = json!(ct);
    }
    if let Some(b) = body {
        headers["content-length"] = json!(b.len().to_string());
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-central-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "curl/8.5.0"
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "04/Dec/2026:19:50:00 +0000",
            "timeEpoch": 1796413800000u64
        },
        "isBase64Encoded": false
    });
    if let Some(b) = body {
        event["body"] = json!(b);
    }
    event
}

/// The `lambda_http` request for an event, parsed as the runtime parses it.
pub fn request(event: &serde_json::Value) -> Request {
    lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway v2 event")
}

/// A JSON POST to `path`.
pub fn post_json(path: &str, body: &str) -> Request {
    request(&apigw_event(
        "POST",
        path,
        Some("application/json"),
        Some(body),
    ))
}
