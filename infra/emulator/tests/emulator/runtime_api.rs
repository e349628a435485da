//! The Runtime API seen from a runtime: the test plays the function, with a
//! script instance that only publishes its `AWS_LAMBDA_RUNTIME_API`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::helpers::{Emulator, Func, Options, Reply, client, routes, send_with};

/// An instance that never polls by itself: the test polls in its place.
const MANUAL: &str =
    "#!/bin/sh\necho \"$AWS_LAMBDA_RUNTIME_API\" > \"$(dirname \"$0\")/api.txt\"\nexec sleep 600\n";

async fn manual_emulator() -> (Emulator, String) {
    let e = Emulator::start(
        Options::new(routes(&[Func::new("manual")
            .binary("manual")
            .timeout(7.0)
            .max(1)]))
        .script("manual", MANUAL),
    )
    .await;
    let file = e.dir.0.join("bin").join("api.txt");
    let deadline = Instant::now() + Duration::from_secs(10);
    let api = loop {
        if let Ok(text) = std::fs::read_to_string(&file)
            && text.ends_with('\n')
        {
            break text.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the script instance never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    (e, api)
}

async fn runtime(api: &str, method: Method, path: &str, body: &str) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(format!("{api}/2018-06-01/runtime{path}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send_with(&client(), req).await
}

#[tokio::test(flavor = "multi_thread")]
async fn next_long_polls_until_an_event_arrives_and_replies_are_accepted_once() {
    let (e, api) = manual_emulator().await;
    assert!(
        api.starts_with("http://127.0.0.1:") && api.ends_with("/i/manual/1"),
        "{api}"
    );
    let (status, _) = e.health().await;
    assert_eq!(status, 503, "not ready before the first /next");

    let poll = {
        let api = api.clone();
        tokio::spawn(async move { runtime(&api, Method::GET, "/invocation/next", "").await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!poll.is_finished(), "/next answered without an event");
    e.wait_ready().await;

    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let front = {
        let url = e.url("/manual/x?q=1");
        tokio::spawn(async move {
            let req = Request::post(url)
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from_static(b"hi")))
                .unwrap();
            send_with(&client(), req).await
        })
    };
    let next = poll.await.unwrap();
    assert_eq!(next.status, 200);
    let id = next.header("lambda-runtime-aws-request-id").to_owned();
    let deadline: u64 = next.header("lambda-runtime-deadline-ms").parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        deadline >= before + 6_900 && deadline <= now + 7_100,
        "deadline {deadline} is not now + 7 s"
    );
    assert!(
        next.header("lambda-runtime-invoked-function-arn")
            .ends_with(":function:manual")
    );
    assert!(
        next.header("lambda-runtime-trace-id")
            .starts_with("Root=1-")
    );
    assert!(next.headers.get("lambda-runtime-client-context").is_none());
    assert!(
        next.headers
            .get("lambda-runtime-cognito-identity")
            .is_none()
    );
    let event = next.json();
    assert_eq!(event["rawPath"], "/manual/x");
    assert_eq!(event["body"], "hi");
    assert_eq!(event["requestContext"]["requestId"], id.as_str());

    let answer = r#"{"statusCode":200,"headers":{"content-type":"text/plain"},"body":"manual"}"#;
    let path = format!("/invocation/{id}/response");
    assert_eq!(runtime(&api, Method::POST, &path, answer).await.status, 202);
    let reply = front.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(&reply.body[..], b"manual");
    assert_eq!(runtime(&api, Method::POST, &path, answer).await.status, 403);

    // The next invocation ends with an error document: the client gets 502.
    let poll = {
        let api = api.clone();
        tokio::spawn(async move { runtime(&api, Method::GET, "/invocation/next", "").await })
    };
    let front = {
        let url = e.url("/manual");
        tokio::spawn(async move {
            send_with(&client(), Request::get(url).body(Full::default()).unwrap()).await
        })
    };
    let next = poll.await.unwrap();
    let id = next.header("lambda-runtime-aws-request-id").to_owned();
    let error = r#"{"errorType":"Boom","errorMessage":"failed"}"#;
    let path = format!("/invocation/{id}/error");
    assert_eq!(runtime(&api, Method::POST, &path, error).await.status, 202);
    front.await.unwrap().assert_problem(502, "BAD_GATEWAY");
    assert_eq!(runtime(&api, Method::POST, &path, error).await.status, 403);

    // Another instance's base path cannot answer, nor can unknown paths.
    let other = api.replace("/i/manual/1", "/i/manual/99");
    assert_eq!(
        runtime(&other, Method::GET, "/invocation/next", "")
            .await
            .status,
        403
    );
    assert_eq!(runtime(&api, Method::GET, "/nope", "").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_init_error_posted_by_the_runtime_fails_the_instance() {
    let (e, api) = manual_emulator().await;
    let r = runtime(
        &api,
        Method::POST,
        "/init/error",
        r#"{"errorType":"X","errorMessage":"y"}"#,
    )
    .await;
    assert_eq!(r.status, 202);
    e.wait_log("about the init error", |v| {
        v["fields"]["message"] == "instance reported an initialization error"
    })
    .await;
    let (status, h) = e.health().await;
    assert_eq!(status, 503);
    assert_eq!(h["functions"]["manual"]["init_failing"], true);
}
