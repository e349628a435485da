//! The users service end to end: the real function binaries under the
//! emulator (and under `cargo lambda watch`), real HTTP, the real
//! DynamoDB-compatible endpoint, and PyJWT as an independent verifier.

// A test crate: helpers fail the test that calls them, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{
    Http, Reply, Service, bin_dir, free_port, root, signing_key_file, verify_with_pyjwt,
};
use tokio::process::Command;
use users::domain::Email;
use users::store::AccountStatus;

const AUDIENCE: &str = "shop-example";

fn ada() -> Value {
    json!({"name": "Ada Lovelace", "email": "Ada@Example.com", "password": "analytical engine"})
}

fn ada_login() -> Value {
    json!({"email": "ada@example.com", "password": "analytical engine"})
}

#[tokio::test]
async fn register_login_and_a_token_that_pyjwt_verifies_through_the_jwks_url() {
    let service = Service::start().await;
    let http = Http::default();

    let registered = http.post_json(&service.url("/api/v1/users"), &ada()).await;
    assert_eq!(registered.status, 201, "{}", registered.text());
    let id = registered.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(registered.header("location"), format!("/api/v1/users/{id}"));

    let logged_in = http
        .post_json(&service.url("/api/v1/users/login"), &ada_login())
        .await;
    assert_eq!(logged_in.status, 200, "{}", logged_in.text());
    assert_eq!(logged_in.header("cache-control"), "no-store");
    let token = logged_in.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let jwks = http.get(&service.url("/.well-known/jwks.json")).await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.header("cache-control"), "public, max-age=300");

    let claims = verify_with_pyjwt(
        &service.url("/.well-known/jwks.json"),
        &service.issuer,
        AUDIENCE,
        &token,
    );
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["email"], "ada@example.com");
    assert_eq!(claims["name"], "Ada Lovelace");
    assert_eq!(claims["iss"], service.issuer.as_str());
    assert_eq!(claims["aud"], AUDIENCE);

    assert!(
        service.stop().await.success(),
        "the emulator exits 0 on SIGTERM"
    );
}

/// Records one request's outcome for the contract check.
fn record(log: &mut Vec<Value>, method: &str, path: &str, reply: &Reply) {
    let headers: serde_json::Map<String, Value> = reply
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap())))
        .collect();
    log.push(json!({"method": method, "path": path, "status": reply.status, "headers": headers, "body": reply.text()}));
}

#[tokio::test]
async fn every_outcome_of_the_contract_matches_openapi_yaml() {
    let service = Service::start().await;
    let http = Http::default();
    let mut log = Vec::new();
    let users = "/api/v1/users";
    let login = "/api/v1/users/login";
    let jwks = "/.well-known/jwks.json";
    let too_big = "x".repeat(64 * 1024 + 1);

    let cases: Vec<(&str, &str, Option<&str>, String, u16)> = vec![
        (
            "POST",
            users,
            Some("application/json"),
            ada().to_string(),
            201,
        ),
        (
            "POST",
            users,
            Some("application/json"),
            ada().to_string(),
            409,
        ),
        (
            "POST",
            users,
            Some("application/json"),
            "{not json".into(),
            400,
        ),
        (
            "POST",
            users,
            Some("application/json"),
            json!({"name": "", "email": "x", "password": "short"}).to_string(),
            400,
        ),
        ("POST", users, Some("text/plain"), ada().to_string(), 415),
        (
            "POST",
            users,
            Some("application/json"),
            too_big.clone(),
            413,
        ),
        ("GET", users, None, String::new(), 405),
        (
            "POST",
            login,
            Some("application/json"),
            ada_login().to_string(),
            200,
        ),
        (
            "POST",
            login,
            Some("application/json"),
            json!({"email": "ada@example.com", "password": "wrong password"}).to_string(),
            401,
        ),
        (
            "POST",
            login,
            Some("application/json"),
            json!({"email": "nobody@example.com", "password": "wrong password"}).to_string(),
            401,
        ),
        (
            "POST",
            login,
            Some("application/json"),
            json!({"email": 1}).to_string(),
            400,
        ),
        ("POST", login, None, ada_login().to_string(), 415),
        ("POST", login, Some("application/json"), too_big, 413),
        ("GET", login, None, String::new(), 405),
        ("GET", jwks, None, String::new(), 200),
        ("POST", jwks, Some("application/json"), "{}".into(), 405),
    ];
    for (method, path, content_type, body, expected) in cases {
        let reply = http
            .send(method, &service.url(path), content_type, body)
            .await;
        assert_eq!(reply.status, expected, "{method} {path}: {}", reply.text());
        record(&mut log, method, path, &reply);
    }

    service
        .store
        .set_status(
            &Email::parse("ada@example.com").unwrap(),
            AccountStatus::Disabled,
        )
        .await
        .unwrap();
    let inactive = http.post_json(&service.url(login), &ada_login()).await;
    assert_eq!(inactive.status, 403);
    record(&mut log, "POST", login, &inactive);

    // The same binaries against a store that is down.
    let dead_store = format!("http://127.0.0.1:{}", free_port());
    let down = Service::start_with(&[("AWS_ENDPOINT_URL", &dead_store)]).await;
    for path in [users, login] {
        let reply = http.post_json(&down.url(path), &ada()).await;
        assert_eq!(reply.status, 503, "{path}: {}", reply.text());
        record(&mut log, "POST", path, &reply);
    }

    let recorded = support::scratch().join("responses.json");
    std::fs::write(&recorded, serde_json::to_vec_pretty(&log).unwrap()).unwrap();
    let output = std::process::Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/contract/check_responses.py"))
        .arg(root().join("openapi.yaml"))
        .arg(&recorded)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "responses do not match openapi.yaml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Schemathesis generates requests from openapi.yaml (valid, invalid and
/// hostile: odd Unicode, wrong types, missing fields, other methods) and
/// checks every answer: never a 5xx, always a documented status, content
/// type, headers and body. The seed makes the run repeatable. Its two
/// acceptance checks are left out: the email rule applies after NFKC
/// normalization, which JSON Schema cannot express (`Ａ＠ｂ．ｃｏ` is valid, `ª@b.co`
/// becomes `a@b.co`, `¸` becomes a space), so "schema-valid" and "accepted"
/// differ for such input by design; the handler tests pin those rules.
#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_contract_violation() {
    let service = Service::start().await;
    let spec = root().join("openapi.yaml");
    let output = Command::new(root().join(".venv/bin/schemathesis"))
        .args(["run", spec.to_str().unwrap(), "--url", &service.base])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance,negative_data_rejection",
        ])
        .args([
            "--max-examples",
            "100",
            "--seed",
            "1",
            "--workers",
            "2",
            "--no-color",
        ])
        // It keeps a cache of found failures in its working directory.
        .current_dir(support::scratch())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(service.stop().await.success());
}

#[tokio::test]
async fn sixty_four_concurrent_clients_all_get_their_answer() {
    let service = Service::start().await;
    let http = Http::default();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let http = http.clone();
        let register = service.url("/api/v1/users");
        let jwks = service.url("/.well-known/jwks.json");
        tasks.push(tokio::spawn(async move {
            let body = json!({"name": format!("User {i}"), "email": format!("user{i}@example.com"), "password": "analytical engine"});
            let registered = http.post_json(&register, &body).await;
            let keys = http.get(&jwks).await;
            (registered.status, keys.status)
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), (201, 200));
    }
    assert_eq!(
        service.store.count_users().await.unwrap(),
        64,
        "no registration lost or duplicated"
    );
    assert!(service.stop().await.success());
}

#[tokio::test]
async fn json_logs_have_a_line_per_request_with_its_id_and_never_a_secret() {
    let service = Service::start_with(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")]).await;
    let http = Http::default();
    let registered = http.post_json(&service.url("/api/v1/users"), &ada()).await;
    let token = http
        .post_json(&service.url("/api/v1/users/login"), &ada_login())
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = http
        .post_json(
            &service.url("/api/v1/users/login"),
            &json!({"email": "ada@example.com", "password": "wrong password"}),
        )
        .await;
    let log = service.log_text();
    assert!(service.stop().await.success());

    // Every line is JSON; the functions' own lines arrive inside the
    // emulator's, tagged with the function.
    let mut finished = Vec::new();
    for line in log.lines() {
        let outer: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        if outer["target"] != "function" {
            continue;
        }
        let inner: Value = serde_json::from_str(outer["fields"]["message"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("a function line that is not JSON ({e}): {line}"));
        if inner["fields"]["message"] == "request finished" {
            finished.push((
                inner["span"]["request_id"].as_str().unwrap().to_owned(),
                inner["fields"]["status"].as_u64().unwrap(),
            ));
        }
    }
    let ids: Vec<&str> = [&registered, &refused]
        .iter()
        .map(|r| r.header("apigw-requestid"))
        .collect();
    assert_eq!(finished.len(), 3, "one line per request:\n{log}");
    assert!(finished.contains(&(ids[0].to_owned(), 201)), "{finished:?}");
    assert!(finished.contains(&(ids[1].to_owned(), 401)), "{finished:?}");
    for secret in [
        "analytical engine",
        "wrong password",
        token.as_str(),
        "$argon2id$",
        "PRIVATE KEY",
    ] {
        assert!(
            !log.contains(secret),
            "the log contains a secret ({secret:.12}…):\n{log}"
        );
    }
}

#[tokio::test]
async fn the_same_binaries_work_under_cargo_lambda_watch() {
    let watch = root().join(".venv/bin/cargo-lambda");
    assert!(
        watch.is_file(),
        "{} missing: run `make venv`",
        watch.display()
    );
    let bin = bin_dir();
    let store = support::fresh_table().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = support::scratch().join("watch.log");
    let _watch = Command::new(watch)
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
        ])
        .current_dir(root())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // cargo lambda watch reads the workspace's metadata before it listens,
    // and a function whose runtime API refuses connections exits: wait.
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "cargo lambda watch did not listen within 30 s; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut functions = Vec::new();
    for name in ["register", "login", "jwks"] {
        functions.push(
            Command::new(bin.join(name))
                .env("AWS_LAMBDA_RUNTIME_API", format!("{base}/.rt/{name}"))
                .env("AWS_LAMBDA_FUNCTION_NAME", name)
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                .env("USERS_TABLE", store.table())
                .env("AWS_ENDPOINT_URL", support::endpoint())
                .env("JWT_PRIVATE_KEY_FILE", signing_key_file())
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap(),
        );
    }
    let http = Http::default();
    let registered = http
        .post_json(&format!("{base}/api/v1/users"), &ada())
        .await;
    assert_eq!(registered.status, 201, "{}", registered.text());
    let id = registered.json()["id"].as_str().unwrap().to_owned();
    let logged_in = http
        .post_json(&format!("{base}/api/v1/users/login"), &ada_login())
        .await;
    assert_eq!(logged_in.status, 200, "{}", logged_in.text());
    let token = logged_in.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = verify_with_pyjwt(
        &format!("{base}/.well-known/jwks.json"),
        "http://localhost:8080",
        AUDIENCE,
        &token,
    );
    assert_eq!(claims["sub"], id.as_str());
    drop(functions);
}

#[test]
fn the_cargo_lambda_router_matches_the_routes_file() {
    let routes: toml::Table = std::fs::read_to_string(root().join("infra/routes.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mut from_routes: Vec<(String, String, String)> = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().into(),
                r["method"].as_str().unwrap().into(),
                r["function"].as_str().unwrap().into(),
            )
        })
        .collect();
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let router = manifest["workspace"]["metadata"]["lambda"]["watch"]["router"]
        .as_table()
        .unwrap();
    let mut from_router: Vec<(String, String, String)> = router
        .iter()
        .flat_map(|(path, targets)| {
            targets.as_array().unwrap().iter().map(move |t| {
                (
                    path.clone(),
                    t["method"].as_str().unwrap().into(),
                    t["function"].as_str().unwrap().into(),
                )
            })
        })
        .collect();
    from_routes.sort();
    from_router.sort();
    assert_eq!(from_routes, from_router);
}
