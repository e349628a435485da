//! Start-up checks and shutdown.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::helpers::{Emulator, Func, Options, TempDir, alive, routes};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_requests_finish_then_stops_children_and_exits_0() {
    let e = Emulator::ready(&[Func::new("fx").warm(2).max(2), Func::new("other")]).await;
    let children: Vec<i32> = e.children().iter().map(|(pid, _)| *pid).collect();
    assert_eq!(children.len(), 3);
    let mut e = e;
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let url = e.url("/fx");
            tokio::spawn(async move {
                let req = http::Request::get(url)
                    .header("x-fixture", "sleep:1500")
                    .body(http_body_util::Full::default())
                    .unwrap();
                crate::helpers::send_with(&crate::helpers::client(), req).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    e.signal(Signal::SIGTERM);
    // New connections are refused once it stopped accepting.
    let deadline = Instant::now() + Duration::from_secs(3);
    while tokio::net::TcpStream::connect(e.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in in_flight {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let status = e.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", e.log_text());
    assert!(started.elapsed() < Duration::from_secs(6));
    for pid in children {
        assert!(!alive(pid.into()), "child {pid} outlived the emulator");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_longer_than_the_grace_period_does_not_hold_shutdown() {
    let routes = routes(&[Func::new("fx").timeout(60.0)]);
    let mut e =
        Emulator::start(Options::new(routes).env("EMULATOR_SHUTDOWN_GRACE_SECONDS", "0.5")).await;
    e.wait_ready().await;
    let url = e.url("/fx");
    let slow = tokio::spawn(async move {
        let req = http::Request::get(url)
            .header("x-fixture", "sleep:30000")
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap();
        crate::helpers::client()
            .request(req)
            .await
            .map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    e.signal(Signal::SIGINT);
    let status = e.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("the slow client is released")
        .unwrap();
    assert!(
        answer.as_ref().map_or(true, |s| !s.is_success()),
        "{answer:?}"
    );
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_emulator"))
        .args(args)
        .envs(env.iter().copied())
        .env("EMULATOR_LOG_FORMAT", "text")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn check_accepts_the_repository_routes_file_and_rejects_a_bad_one() {
    let repo_routes = concat!(env!("CARGO_MANIFEST_DIR"), "/../routes.toml");
    let (code, text) = run(&["--check", "--routes", repo_routes], &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("routes file is valid"), "{text}");

    let dir = TempDir::new();
    let bad = dir.0.join("bad.toml");
    std::fs::write(
        &bad,
        routes(&[Func::new("fx")]).replace("/fx/{rest+}", "/_emulator/fx"),
    )
    .unwrap();
    let (code, text) = run(&["--check", "--routes", bad.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("/_emulator/"), "{text}");
    let (code, text) = run(
        &["--check"],
        &[(
            "EMULATOR_ROUTES",
            dir.0.join("missing.toml").to_str().unwrap(),
        )],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("cannot read routes file"), "{text}");
}

#[test]
fn a_missing_function_binary_stops_start_up_with_a_clear_message() {
    let dir = TempDir::new();
    let file = dir.0.join("routes.toml");
    std::fs::write(&file, routes(&[Func::new("fx").binary("not-there")])).unwrap();
    let (code, text) = run(
        &[
            "--routes",
            file.to_str().unwrap(),
            "--bin-dir",
            dir.0.to_str().unwrap(),
        ],
        &[("PORT", "0"), ("EMULATOR_BIND", "127.0.0.1")],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("function binary not found"), "{text}");
}

/// As PID 1 (here: of a fresh PID namespace), orphaned grandchildren are
/// reaped too. Needs `unshare` with the right to create namespaces (root,
/// as on the build machines and in CI).
#[tokio::test(flavor = "multi_thread")]
async fn as_pid_1_it_reaps_orphaned_grandchildren() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "true"])
        .status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "this test needs `unshare --pid --fork` (util-linux, run as root)"
    );
    // Each instance leaves behind a background process that outlives it.
    const ORPHANER: &str = "#!/bin/sh\n(sleep 0.2 &)\nexec \"$(dirname \"$0\")/fixture\"\n";
    let routes = routes(&[Func::new("fx").binary("orphaner").warm(2).max(2)]);
    let mut options = Options::new(routes).script("orphaner", ORPHANER);
    options.prefix = vec!["unshare", "--pid", "--fork", "--kill-child"];
    let e = Emulator::start(options).await;
    e.wait_ready().await;
    // The emulator runs as the child of `unshare`.
    let inner = crate::helpers::children_of(e.pid() as i32);
    assert_eq!(inner.len(), 1, "{inner:?}");
    let emulator = inner[0].0;
    // Crash an instance so a fresh one (and another orphan) appears.
    e.mode("/fx", "exit")
        .await
        .assert_problem(502, "BAD_GATEWAY");
    e.get("/fx").await.echo();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let children = crate::helpers::children_of(emulator);
    assert!(
        !children.iter().any(|(_, s)| *s == 'Z'),
        "zombies under PID 1: {children:?}"
    );
    e.wait_log("about reaping", |v| {
        v["fields"]["message"] == "running as PID 1: reaping orphaned processes"
    })
    .await;
}
