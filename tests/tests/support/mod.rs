//! The end-to-end harness: starts the real binaries (the emulator with the
//! three functions, or `cargo lambda watch` with them) on a fresh table of
//! the DynamoDB-compatible endpoint that `make test` started, and talks
//! HTTP to them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::process::{Child, Command};
use users::store::dynamo::DynamoStore;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where cargo put the workspace's binaries (`target/debug`): the test
/// executable lives in its `deps/` folder.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for name in ["emulator", "register", "login", "jwks", "users-admin"] {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: build the workspace's binaries first (`make test` does; or `cargo build --workspace --bins`)",
            dir.join(name).display()
        );
    }
    dir
}

/// The DynamoDB-compatible endpoint, or a clear failure.
pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!(
            "end-to-end tests need a DynamoDB-compatible endpoint in AWS_ENDPOINT_URL; \
             run them with `make test` (which starts moto), or start moto yourself and export \
             AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    })
}

/// A new, empty table of the endpoint.
pub async fn fresh_table() -> DynamoStore {
    let table = format!("users-e2e-{}", uuid::Uuid::new_v4().simple());
    let store = DynamoStore::connect_to(&table, &endpoint()).await.unwrap();
    store.create_table_if_missing().await.unwrap();
    store
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test-only signing key.
pub fn signing_key_file() -> PathBuf {
    root().join("tests/fixtures/test-only-rsa2048-pkcs8.pem")
}

/// A per-test scratch directory.
pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("users-e2e-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An HTTP reply, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A plain HTTP/1.1 client.
#[derive(Clone)]
pub struct Http(Client<HttpConnector, Full<Bytes>>);

impl Default for Http {
    fn default() -> Self {
        Self(Client::builder(TokioExecutor::new()).build_http())
    }
}

impl Http {
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(url);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = tokio::time::timeout(
            Duration::from_secs(60),
            self.0
                .request(request.body(Full::new(body.into())).unwrap()),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: no answer within 60 s"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn post_json(&self, url: &str, body: &Value) -> Reply {
        self.send("POST", url, Some("application/json"), body.to_string())
            .await
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send("GET", url, None, Bytes::new()).await
    }
}

/// The emulator with every function of `infra/routes.toml`, on its own port
/// and table, logging to a file.
pub struct Service {
    child: Child,
    pub base: String,
    pub store: DynamoStore,
    pub log: PathBuf,
    pub issuer: String,
}

impl Service {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts with extra environment for the functions.
    pub async fn start_with(extra_env: &[(&str, &str)]) -> Self {
        let bin = bin_dir();
        let store = fresh_table().await;
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let log = scratch().join("emulator.log");
        let file = std::fs::File::create(&log).unwrap();
        let issuer = "https://auth.test.example".to_owned();
        let mut command = Command::new(bin.join("emulator"));
        command
            .env("PORT", port.to_string())
            .env("EMULATOR_BIND", "127.0.0.1")
            .env("EMULATOR_ROUTES", root().join("infra/routes.toml"))
            .env("EMULATOR_BIN_DIR", &bin)
            .env("EMULATOR_SHUTDOWN_GRACE_SECONDS", "5")
            .env("USERS_TABLE", store.table())
            .env("AWS_ENDPOINT_URL", endpoint())
            .env("JWT_PRIVATE_KEY_FILE", signing_key_file())
            .env("JWT_ISSUER", &issuer)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        let service = Self {
            child,
            base,
            store,
            log,
            issuer,
        };
        service.wait_ready().await;
        service
    }

    async fn wait_ready(&self) {
        let http = Http::default();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let probe = tokio::time::timeout(
                Duration::from_secs(2),
                http.0
                    .get(self.url("/_emulator/health/ready").parse().unwrap()),
            )
            .await;
            if let Ok(Ok(response)) = probe
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the emulator did not become ready within 30 s; its log:\n{}",
            self.log_text()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id().unwrap()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the emulator stops within 20 s")
            .unwrap()
    }
}

/// Runs the PyJWT verifier; returns the verified claims.
pub fn verify_with_pyjwt(jwks_url: &str, issuer: &str, audience: &str, token: &str) -> Value {
    let python = root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `make venv`",
        python.display()
    );
    let output = std::process::Command::new(python)
        .arg(root().join("tests/interop/verify_token.py"))
        .args([jwks_url, issuer, audience, token])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "PyJWT rejected the token: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
