//! The HTTP side: routing, events, responses, limits, health, logs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Emulator, Func, Options, function_tables};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const API_ROUTES: &str = r#"
[[routes]]
method = "POST"
path = "/api/v1/users"
function = "users"

[[routes]]
method = "GET"
path = "/api/v1/users/{id}"
function = "users"

[[routes]]
method = "POST"
path = "/api/v1/users/login"
function = "login"

[[routes]]
method = "GET"
path = "/.well-known/jwks.json"
function = "jwks"
"#;

async fn api_emulator() -> Emulator {
    let routes = format!(
        "{API_ROUTES}\n{}",
        function_tables(&[
            Func::new("users").max(1),
            Func::new("login").max(1),
            Func::new("jwks").max(1)
        ])
    );
    let e = Emulator::start(Options::new(routes)).await;
    e.wait_ready().await;
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn each_route_reaches_its_function_with_its_route_key_and_path_parameters() {
    let e = api_emulator().await;
    for (method, path, function, route_key) in [
        (Method::POST, "/api/v1/users", "users", "POST /api/v1/users"),
        (
            Method::POST,
            "/api/v1/users/login",
            "login",
            "POST /api/v1/users/login",
        ),
        (
            Method::GET,
            "/.well-known/jwks.json",
            "jwks",
            "GET /.well-known/jwks.json",
        ),
        (
            Method::GET,
            "/api/v1/users/a%20b",
            "users",
            "GET /api/v1/users/{id}",
        ),
    ] {
        let echo = e.call(method.clone(), path, &[], "").await.echo();
        assert_eq!(
            echo["env"]["AWS_LAMBDA_FUNCTION_NAME"], function,
            "{method} {path}"
        );
        assert_eq!(echo["event"]["routeKey"], route_key);
        assert_eq!(echo["event"]["rawPath"], path);
    }
    let echo = e.get("/api/v1/users/a%20b").await.echo();
    assert_eq!(echo["event"]["pathParameters"]["id"], "a b");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_are_404_and_wrong_methods_405_with_allow_as_problem_json() {
    let e = api_emulator().await;
    e.get("/nope").await.assert_problem(404, "NOT_FOUND");
    e.get("/api/v1/users/")
        .await
        .assert_problem(404, "NOT_FOUND");
    e.get("/_emulator/other")
        .await
        .assert_problem(404, "NOT_FOUND");
    let r = e.get("/api/v1/users").await;
    r.assert_problem(405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.header("allow"), "POST");
    let r = e
        .call(Method::DELETE, "/.well-known/jwks.json", &[], "")
        .await;
    r.assert_problem(405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.header("allow"), "GET");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_is_a_complete_payload_2_0_event() {
    let e = Emulator::ready(&[Func::new("fx")]).await;
    let before = now_ms();
    let r = e
        .call(
            Method::POST,
            "/fx/a/b?x=1&x=2&y=h%C3%A9llo&empty=",
            &[
                ("Host", "api.example.test:8443"),
                ("User-Agent", "tests/1.0"),
                ("X-Repeated", "one"),
                ("x-repeated", "two"),
                ("Cookie", "c1=v1; c2=v2"),
                ("Content-Type", "application/json; charset=utf-8"),
            ],
            r#"{"name":"Ada"}"#,
        )
        .await;
    let request_id = r.header("apigw-requestid").to_owned();
    let echo = r.echo();
    let ev = &echo["event"];
    assert_eq!(ev["version"], "2.0");
    assert_eq!(ev["routeKey"], "ANY /fx/{rest+}");
    assert_eq!(ev["rawPath"], "/fx/a/b");
    assert_eq!(ev["rawQueryString"], "x=1&x=2&y=h%C3%A9llo&empty=");
    assert_eq!(ev["cookies"], serde_json::json!(["c1=v1", "c2=v2"]));
    let h = &ev["headers"];
    assert_eq!(h["x-repeated"], "one,two");
    assert_eq!(h["user-agent"], "tests/1.0");
    assert_eq!(h["content-type"], "application/json; charset=utf-8");
    assert!(h.get("cookie").is_none(), "cookies move out of the headers");
    assert!(
        h.as_object()
            .unwrap()
            .keys()
            .all(|k| *k == k.to_lowercase())
    );
    let q = &ev["queryStringParameters"];
    assert_eq!(q["x"], "1,2");
    assert_eq!(q["y"], "héllo");
    assert_eq!(q["empty"], "");
    assert_eq!(ev["pathParameters"]["rest"], "a/b");
    let rc = &ev["requestContext"];
    assert_eq!(rc["http"]["method"], "POST");
    assert_eq!(rc["http"]["path"], "/fx/a/b");
    assert_eq!(rc["http"]["protocol"], "HTTP/1.1");
    assert_eq!(rc["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(rc["http"]["userAgent"], "tests/1.0");
    assert_eq!(rc["requestId"], request_id.as_str());
    assert_eq!(rc["routeKey"], "ANY /fx/{rest+}");
    assert_eq!(rc["stage"], "$default");
    assert_eq!(rc["domainName"], "api.example.test:8443");
    assert_eq!(rc["domainPrefix"], "api");
    assert_eq!(rc["accountId"], "123456789012");
    assert_eq!(rc["apiId"], "emulator");
    let epoch = rc["timeEpoch"].as_i64().unwrap();
    assert!(epoch >= before - 5 && epoch <= now_ms() + 5, "{epoch}");
    let time = rc["time"].as_str().unwrap();
    // e.g. 12/Mar/2020:19:03:58 +0000
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    assert_eq!(time.len(), 26, "{time}");
    assert!(months.contains(&&time[3..6]), "{time}");
    assert!(time.ends_with(" +0000") && &time[2..3] == "/" && &time[11..12] == ":");
    assert_eq!(ev["body"], r#"{"name":"Ada"}"#);
    assert_eq!(ev["isBase64Encoded"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_invocation_carries_lambda_context_and_environment() {
    let routes = crate::helpers::routes(&[Func::new("fx")
        .timeout(7.0)
        .env("FIXTURE_FROM_ROUTES", "routes")]);
    let e = Emulator::start(
        Options::new(routes)
            .env("FIXTURE_FROM_EMULATOR", "emulator")
            .env("AWS_LAMBDA_MAX_CONCURRENCY", "8")
            .env("AWS_LAMBDA_LOG_LEVEL", "debug")
            .env("AWS_REGION", "eu-central-1"),
    )
    .await;
    e.wait_ready().await;
    let before = now_ms();
    let r = e.get("/fx").await;
    let request_id = r.header("apigw-requestid").to_owned();
    let echo = r.echo();
    let ctx = &echo["context"];
    assert_eq!(ctx["request_id"], request_id.as_str());
    let deadline = ctx["deadline"].as_i64().unwrap();
    assert!(
        deadline >= before + 6_900 && deadline <= now_ms() + 7_100,
        "deadline {deadline} is not now + 7 s"
    );
    assert_eq!(
        ctx["invoked_function_arn"],
        "arn:aws:lambda:eu-central-1:123456789012:function:fx"
    );
    assert!(
        ctx["xray_trace_id"]
            .as_str()
            .unwrap()
            .starts_with("Root=1-")
    );
    assert_eq!(ctx["client_context"], false);
    assert_eq!(ctx["identity"], false);
    let env = &echo["env"];
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "fx");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "128");
    assert_eq!(env["AWS_LAMBDA_LOG_LEVEL"], "debug");
    assert_eq!(env["FIXTURE_FROM_ROUTES"], "routes");
    assert_eq!(env["FIXTURE_FROM_EMULATOR"], "emulator");
    assert!(env.get("AWS_LAMBDA_MAX_CONCURRENCY").is_none());
    let api = env["AWS_LAMBDA_RUNTIME_API"].as_str().unwrap();
    assert!(
        api.starts_with("http://127.0.0.1:") && api.contains("/i/fx/"),
        "{api}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_bodies_round_trip_through_base64() {
    let e = Emulator::ready(&[Func::new("fx")]).await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let r = e
        .call(
            Method::POST,
            "/fx",
            &[("content-type", "application/octet-stream")],
            bytes.clone(),
        )
        .await;
    let echo = r.echo();
    assert_eq!(echo["event"]["isBase64Encoded"], true);
    assert_eq!(
        BASE64
            .decode(echo["event"]["body"].as_str().unwrap())
            .unwrap(),
        bytes
    );
    let r = e
        .call(
            Method::POST,
            "/fx",
            &[
                ("x-fixture", "binary"),
                ("content-type", "application/octet-stream"),
            ],
            bytes.clone(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/octet-stream");
    assert_eq!(&r.body[..], &bytes[..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn response_headers_multi_value_headers_and_cookies_map_back() {
    let e = Emulator::ready(&[Func::new("fx")]).await;
    let r = e.mode("/fx", "cookies").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("content-type"), "text/plain");
    assert_eq!(r.header("x-single"), "one");
    let multi: Vec<_> = r.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    let cookies: Vec<_> = r.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["session=abc; Path=/; HttpOnly", "theme=dark"]);
    assert_eq!(&r.body[..], b"cookies set");
}

#[tokio::test(flavor = "multi_thread")]
async fn bare_answers_are_200_json_and_bad_ones_502() {
    let e = Emulator::ready(&[Func::new("fx")]).await;
    let r = e.mode("/fx", "bare").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.json(), serde_json::json!({"bare": true, "n": 1}));
    let r = e.mode("/fx", "bare-string").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), "just a string");
    e.mode("/fx", "malformed")
        .await
        .assert_problem(502, "BAD_GATEWAY");
    e.mode("/fx", "error")
        .await
        .assert_problem(502, "BAD_GATEWAY");
    // The instance is fine after a function error.
    e.get("/fx").await.echo();
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_above_6_mib_are_413_and_6_mib_passes() {
    let e = Emulator::ready(&[Func::new("fx")]).await;
    let r = e
        .call(
            Method::POST,
            "/fx",
            &[("content-type", "application/octet-stream")],
            vec![7u8; 6 * 1024 * 1024 + 1],
        )
        .await;
    r.assert_problem(413, "BODY_TOO_LARGE");
    // Exactly the limit reaches the function.
    let r = e
        .call(
            Method::POST,
            "/fx",
            &[("content-type", "text/plain"), ("x-fixture", "bare")],
            vec![b'a'; 6 * 1024 * 1024],
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_endpoints_answer_json() {
    let e = Emulator::ready(&[Func::new("fx").warm(2), Func::new("other").warm(1)]).await;
    let r = e.get("/_emulator/health/live").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.json()["status"], "live");
    let (status, h) = e.health().await;
    assert_eq!(status, 200);
    assert_eq!(h["status"], "ready");
    assert_eq!(h["functions"]["fx"]["warm"], 2);
    assert_eq!(h["functions"]["other"]["warm"], 1);
    let r = e
        .call(Method::POST, "/_emulator/health/live", &[], "")
        .await;
    r.assert_problem(405, "METHOD_NOT_ALLOWED");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_request_is_logged_once_and_child_output_passes_through_tagged() {
    let e = Emulator::ready(&[Func::new("fx")]).await;
    let r = e.mode("/fx", "log").await;
    let request_id = r.header("apigw-requestid").to_owned();
    let line = e
        .wait_log("for the request", |v| {
            v["fields"]["message"] == "request" && v["fields"]["request_id"] == request_id.as_str()
        })
        .await;
    let f = &line["fields"];
    assert_eq!(f["function"], "fx");
    assert_eq!(f["instance"], 1);
    assert_eq!(f["method"], "GET");
    assert_eq!(f["path"], "/fx");
    assert_eq!(f["status"], 200);
    assert_eq!(f["start"], "cold");
    assert!(f["duration_ms"].as_f64().unwrap() > 0.0);
    for (stream, text) in [
        ("stdout", "fixture stdout line"),
        ("stderr", "fixture stderr line"),
    ] {
        let line = e.wait_log(text, |v| v["fields"]["message"] == text).await;
        assert_eq!(line["fields"]["function"], "fx");
        assert_eq!(line["fields"]["instance"], 1);
        assert_eq!(line["fields"]["stream"], stream);
    }
    let r = e.get("/fx").await;
    let request_id = r.header("apigw-requestid").to_owned();
    let line = e
        .wait_log("for the second request", |v| {
            v["fields"]["request_id"] == request_id.as_str()
        })
        .await;
    assert_eq!(line["fields"]["start"], "warm");
    let count = e
        .log_json()
        .iter()
        .filter(|v| v["fields"]["request_id"] == request_id.as_str())
        .count();
    assert_eq!(count, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_too_slow_with_its_headers_is_cut_off() {
    let routes = crate::helpers::routes(&[Func::new("fx")]);
    let e = Emulator::start(Options::new(routes).env("EMULATOR_HEADER_TIMEOUT_SECONDS", "1")).await;
    e.wait_ready().await;
    let mut stream = tokio::net::TcpStream::connect(e.addr).await.unwrap();
    stream
        .write_all(b"GET /fx HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection stayed open");
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // Everyone else is still served (on a new connection: the header timeout
    // also closes idle keep-alive connections, such as the pooled one).
    let req = http::Request::get(e.url("/fx"))
        .body(http_body_util::Full::default())
        .unwrap();
    crate::helpers::send_with(&crate::helpers::client(), req)
        .await
        .echo();
}
