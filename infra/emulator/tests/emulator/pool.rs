//! Instances: concurrency, queueing, reaping, and many clients at once.

use std::time::{Duration, Instant};

use crate::helpers::{Emulator, Func, Options, distinct, routes};

#[tokio::test(flavor = "multi_thread")]
async fn n_parallel_requests_are_served_by_n_instances() {
    let e = std::sync::Arc::new(Emulator::ready(&[Func::new("fx").warm(1).max(4)]).await);
    let started = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let e = e.clone();
            tokio::spawn(async move { e.mode("/fx", "sleep:800").await.echo()["pid"].as_i64() })
        })
        .collect();
    let mut pids = Vec::new();
    for t in tasks {
        pids.push(t.await.unwrap().unwrap());
    }
    assert_eq!(distinct(pids), 4, "four requests, four instances");
    // In parallel, not one after another.
    assert!(
        started.elapsed() < Duration::from_millis(2400),
        "{:?}",
        started.elapsed()
    );
    let (_, h) = e.health().await;
    assert!(h["functions"]["fx"]["warm"].as_u64().unwrap() >= 4, "{h}");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_the_maximum_queue_and_a_full_queue_answers_503() {
    let e = std::sync::Arc::new(Emulator::ready(&[Func::new("fx").warm(2).max(2).queue(2)]).await);
    let started = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let e = e.clone();
            tokio::spawn(async move {
                let r = e.mode("/fx", "sleep:1000").await;
                (
                    r.status.as_u16(),
                    started.elapsed(),
                    r.echo()["pid"].as_i64().unwrap(),
                )
            })
        })
        .collect();
    // Wait until two run and two wait.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, h) = e.health().await;
        if h["functions"]["fx"]["queued"] == 2 && h["functions"]["fx"]["busy"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never 2 busy + 2 queued: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = e.mode("/fx", "sleep:1").await;
    r.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert_eq!(r.header("retry-after"), "1");
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert!(results.iter().all(|(s, _, _)| *s == 200));
    assert_eq!(
        distinct(results.iter().map(|r| r.2)),
        2,
        "only two instances"
    );
    // A queued request starts only when a running one ends: the two later
    // answers come a whole sleep after the two earlier ones.
    let mut done: Vec<Duration> = results.iter().map(|r| r.1).collect();
    done.sort();
    assert!(
        done[2] >= done[0] + Duration::from_millis(900)
            && done[3] >= done[1] + Duration::from_millis(900),
        "two waited for a free instance: {results:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_instances_above_the_minimum_are_stopped() {
    let routes = routes(&[Func::new("fx").warm(1).max(3)]);
    let e = std::sync::Arc::new(
        Emulator::start(Options::new(routes).env("EMULATOR_IDLE_TIMEOUT_SECONDS", "0.5")).await,
    );
    e.wait_ready().await;
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let e = e.clone();
            tokio::spawn(async move { e.mode("/fx", "sleep:400").await.echo()["pid"].as_i64() })
        })
        .collect();
    let mut pids = Vec::new();
    for t in tasks {
        pids.push(t.await.unwrap().unwrap());
    }
    assert_eq!(distinct(pids.clone()), 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, h) = e.health().await;
        assert_eq!(status, 200, "stays ready while reaping: {h}");
        if h["functions"]["fx"]["warm"] == 1 && h["functions"]["fx"]["starting"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "extra instances never reaped: {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alive = pids.iter().filter(|p| crate::helpers::alive(**p)).count();
    assert!(alive <= 1, "stopped instances still running");
    e.assert_no_zombies().await;
    e.get("/fx").await.echo();
}

#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_concurrent_clients_each_get_their_own_reply() {
    let e = std::sync::Arc::new(Emulator::ready(&[Func::new("fx").warm(2).max(4).queue(64)]).await);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let e = e.clone();
            tokio::spawn(async move {
                let path = format!("/fx/client/{i}");
                let mode = if i % 8 == 0 { "sleep:50" } else { "echo" };
                let r = e.mode(&path, mode).await;
                let header_id = r.header("apigw-requestid").to_owned();
                let echo = r.echo();
                assert_eq!(
                    echo["event"]["rawPath"],
                    path.as_str(),
                    "someone else's reply"
                );
                assert_eq!(echo["context"]["request_id"], header_id.as_str());
                (header_id, echo["pid"].as_i64().unwrap())
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut pids = Vec::new();
    for t in tasks {
        let (id, pid) = t.await.unwrap();
        ids.push(id);
        pids.push(pid);
    }
    assert_eq!(distinct(ids), 64, "every reply is distinct");
    assert!(
        distinct(pids) <= 4,
        "never more than max_concurrency instances"
    );
    e.assert_no_zombies().await;
    let children = e.children();
    assert!(children.len() <= 4, "{children:?}");
    let (status, h) = e.health().await;
    assert_eq!(status, 200);
    assert_eq!(h["functions"]["fx"]["queued"], 0);
    assert_eq!(h["functions"]["fx"]["busy"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_without_warm_instances_starts_one_per_demand() {
    let e = Emulator::ready(&[Func::new("fx").warm(0).max(1)]).await;
    let (_, h) = e.health().await;
    assert_eq!(h["functions"]["fx"]["warm"], 0, "{h}");
    let r = e.get("/fx").await;
    r.echo();
    let line = e
        .wait_log("for the request", |v| {
            v["fields"]["message"] == "request" && v["fields"]["function"] == "fx"
        })
        .await;
    assert_eq!(line["fields"]["start"], "cold");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_that_never_starts_keeps_answering_502_without_hanging() {
    let routes = routes(&[Func::new("fx").warm(0).max(1).env("FIXTURE_INIT", "exit")]);
    let e = Emulator::start(Options::new(routes)).await;
    for _ in 0..3 {
        e.get("/fx").await.assert_problem(502, "BAD_GATEWAY");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (status, h) = e.health().await;
    assert_eq!(status, 503, "{h}");
    let attempts = e
        .log_json()
        .iter()
        .filter(|v| v["fields"]["message"] == "instance starting")
        .count();
    assert!(
        attempts >= 2,
        "the function is retried on demand: {attempts}"
    );
    e.assert_no_zombies().await;
}
