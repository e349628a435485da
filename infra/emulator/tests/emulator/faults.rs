//! Faults in children: timeouts, crashes, init failures, kills, late replies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::helpers::{Emulator, Func, Options, client, routes, send_with, wait_gone};

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_answers_504_and_replaces_the_instance() {
    let e = Emulator::ready(&[Func::new("fx").timeout(0.5).max(1)]).await;
    let old = e.get("/fx").await.echo()["pid"].as_i64().unwrap();
    let started = Instant::now();
    let r = e.mode("/fx", "sleep:5000").await;
    r.assert_problem(504, "GATEWAY_TIMEOUT");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    wait_gone(old).await;
    let new = e.get("/fx").await.echo()["pid"].as_i64().unwrap();
    assert_ne!(old, new, "a fresh instance serves the next request");
    e.assert_no_zombies().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_mid_invocation_answers_502_and_the_instance_is_replaced() {
    let e = Emulator::ready(&[Func::new("fx").max(1)]).await;
    let old = e.get("/fx").await.echo()["pid"].as_i64().unwrap();
    e.mode("/fx", "exit")
        .await
        .assert_problem(502, "BAD_GATEWAY");
    wait_gone(old).await;
    let new = e.get("/fx").await.echo()["pid"].as_i64().unwrap();
    assert_ne!(old, new);
    e.wait_ready().await;
    e.wait_log("about the crash", |v| {
        v["fields"]["message"] == "instance exited during an invocation"
    })
    .await;
    e.assert_no_zombies().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_exits_at_init_is_a_502_and_not_ready() {
    for init in ["exit", "init-error"] {
        let funcs = [
            Func::new("ok"),
            Func::new("broken").env("FIXTURE_INIT", init),
        ];
        let e = Emulator::start(Options::new(routes(&funcs))).await;
        e.wait_log("about the init failure", |v| {
            v["fields"]["function"] == "broken"
                && v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("initialization"))
        })
        .await;
        let (status, h) = e.health().await;
        assert_eq!(status, 503, "{init}: {h}");
        assert_eq!(h["status"], "not_ready");
        assert_eq!(h["functions"]["broken"]["ready"], false);
        assert_eq!(h["functions"]["broken"]["init_failing"], true);
        e.get("/broken").await.assert_problem(502, "BAD_GATEWAY");
        // The healthy function is unaffected.
        e.get("/ok").await.echo();
        let r = e.get("/_emulator/health/live").await;
        assert_eq!(r.status, 200);
        e.assert_no_zombies().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_killed_under_load_costs_at_most_its_own_requests() {
    let e = Arc::new(Emulator::ready(&[Func::new("fx").warm(2).max(2).queue(64)]).await);
    let victim = e.get("/fx").await.echo()["pid"].as_i64().unwrap();
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let e = e.clone();
            tokio::spawn(async move { e.mode("/fx", "sleep:100").await.status.as_u16() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(250)).await;
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 502),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 502).count() <= 1,
        "{statuses:?}"
    );
    wait_gone(victim).await;
    e.wait_ready().await;
    e.get("/fx").await.echo();
    e.assert_no_zombies().await;
}

async fn post(api: &str, path: &str, body: &str) -> StatusCode {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{api}/2018-06-01/runtime{path}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send_with(&client(), req).await.status
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_for_finished_or_unknown_requests_are_refused() {
    let e = Emulator::ready(&[Func::new("fx").timeout(0.5).max(1)]).await;
    let r = e.get("/fx").await;
    let done = r.header("apigw-requestid").to_owned();
    let api = r.echo()["env"]["AWS_LAMBDA_RUNTIME_API"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = r#"{"statusCode":200,"body":"late"}"#;
    assert_eq!(
        post(&api, &format!("/invocation/{done}/response"), body).await,
        403
    );
    assert_eq!(
        post(&api, &format!("/invocation/{done}/error"), "{}").await,
        403
    );
    assert_eq!(
        post(&api, "/invocation/no-such-id/response", body).await,
        403
    );
    // A request that timed out cannot be answered late either.
    let r = e.mode("/fx", "sleep:3000").await;
    r.assert_problem(504, "GATEWAY_TIMEOUT");
    let timed_out = r.header("apigw-requestid").to_owned();
    assert_eq!(
        post(&api, &format!("/invocation/{timed_out}/response"), body).await,
        403
    );
    // Init errors after initialisation are refused too.
    let live = e.get("/fx").await.echo()["env"]["AWS_LAMBDA_RUNTIME_API"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(post(&live, "/init/error", "{}").await, 403);
    e.get("/fx").await.echo();
}
