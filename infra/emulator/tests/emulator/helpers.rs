//! Test harness: starts the real `emulator` binary with a routes file in a
//! fresh temporary directory and the `emulator-fixture` function (or test
//! scripts) as its functions, and talks real HTTP to it.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// Longest any single HTTP exchange may take in a test.
pub const HTTP_LIMIT: Duration = Duration::from_secs(30);

/// The fixture binary, built beside the emulator by the workspace.
pub fn fixture_exe() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_emulator")).with_file_name("emulator-fixture");
    assert!(
        exe.is_file(),
        "the test fixture {} is missing: build it with `cargo build -p emulator-fixture` \
         (or test with `cargo nextest run -p emulator -p emulator-fixture` / `--workspace`)",
        exe.display()
    );
    exe
}

/// One function of a test routes file, served by the fixture by default.
#[derive(Clone)]
pub struct Func {
    pub name: &'static str,
    pub binary: &'static str,
    pub timeout: f64,
    pub min_warm: usize,
    pub max: usize,
    pub queue: Option<usize>,
    pub env: Vec<(&'static str, &'static str)>,
}

impl Func {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            binary: "fixture",
            timeout: 5.0,
            min_warm: 1,
            max: 2,
            queue: None,
            env: Vec::new(),
        }
    }
    pub fn timeout(mut self, seconds: f64) -> Self {
        self.timeout = seconds;
        self
    }
    pub fn warm(mut self, n: usize) -> Self {
        self.min_warm = n;
        self
    }
    pub fn max(mut self, n: usize) -> Self {
        self.max = n;
        self
    }
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = Some(n);
        self
    }
    pub fn env(mut self, k: &'static str, v: &'static str) -> Self {
        self.env.push((k, v));
        self
    }
    pub fn binary(mut self, b: &'static str) -> Self {
        self.binary = b;
        self
    }
}

/// A routes file giving each function `ANY /{name}` and `ANY /{name}/{rest+}`.
pub fn routes(funcs: &[Func]) -> String {
    let mut out = String::new();
    for f in funcs {
        for path in [format!("/{}", f.name), format!("/{}/{{rest+}}", f.name)] {
            out.push_str(&format!(
                "[[routes]]\nmethod = \"ANY\"\npath = \"{path}\"\nfunction = \"{}\"\n\n",
                f.name
            ));
        }
    }
    out.push_str(&function_tables(funcs));
    out
}

/// The `[functions.*]` tables alone.
pub fn function_tables(funcs: &[Func]) -> String {
    let mut out = String::new();
    for f in funcs {
        out.push_str(&format!(
            "[functions.{}]\nbinary = \"{}\"\ntimeout_seconds = {:?}\nmemory_mb = 128\nmin_warm = {}\nmax_concurrency = {}\n",
            f.name, f.binary, f.timeout, f.min_warm, f.max
        ));
        if let Some(q) = f.queue {
            out.push_str(&format!("queue_depth = {q}\n"));
        }
        out.push_str(&format!("[functions.{}.env]\n", f.name));
        for (k, v) in &f.env {
            out.push_str(&format!("{k} = \"{v}\"\n"));
        }
        out.push('\n');
    }
    out
}

/// A fresh directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "emulator-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    /// The fixture's echo document (`event`, `pid`, `env`, `context`).
    pub fn echo(&self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }
    /// Asserts an emulator problem response with this status and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), "application/problem+json");
        let p = self.json();
        assert_eq!(p["type"], "about:blank");
        assert_eq!(p["status"], status);
        assert_eq!(p["code"], code);
        assert!(p["title"].is_string() && p["detail"].is_string(), "{p}");
    }
}

/// A running emulator.
pub struct Emulator {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: TempDir,
    logs: Arc<Mutex<Vec<String>>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// How to start an emulator.
pub struct Options<'a> {
    pub routes: String,
    pub env: Vec<(&'a str, &'a str)>,
    /// Extra files for the binaries directory: (name, shell script).
    pub scripts: Vec<(&'a str, &'a str)>,
    /// A command the emulator runs under (e.g. `unshare ...`).
    pub prefix: Vec<&'a str>,
}

impl<'a> Options<'a> {
    pub fn new(routes: String) -> Self {
        Self {
            routes,
            env: Vec::new(),
            scripts: Vec::new(),
            prefix: Vec::new(),
        }
    }
    pub fn env(mut self, k: &'a str, v: &'a str) -> Self {
        self.env.push((k, v));
        self
    }
    pub fn script(mut self, name: &'a str, body: &'a str) -> Self {
        self.scripts.push((name, body));
        self
    }
}

impl Emulator {
    /// Starts an emulator serving these functions and waits until ready.
    pub async fn ready(funcs: &[Func]) -> Self {
        let emulator = Self::start(Options::new(routes(funcs))).await;
        emulator.wait_ready().await;
        emulator
    }

    /// Starts an emulator and waits for its `listening` line.
    pub async fn start(options: Options<'_>) -> Self {
        let dir = TempDir::new();
        let bin = dir.0.join("bin");
        std::os::unix::fs::symlink(fixture_exe(), bin.join("fixture")).unwrap();
        for (name, body) in &options.scripts {
            let path = bin.join(name);
            std::fs::write(&path, body).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let routes = dir.0.join("routes.toml");
        std::fs::write(&routes, &options.routes).unwrap();

        let mut command = match options.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_emulator"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_emulator")),
        };
        command
            .arg("--routes")
            .arg(&routes)
            .arg("--bin-dir")
            .arg(&bin)
            .env("PORT", "0")
            .env("EMULATOR_BIND", "127.0.0.1")
            .env("EMULATOR_LOG_FORMAT", "json")
            .env_remove("EMULATOR_LOG")
            .env_remove("AWS_LAMBDA_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &options.env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start the emulator");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && v["fields"]["message"] == "listening"
                    {
                        let _ = tx.send(v["fields"]["addr"].as_str().unwrap_or("").to_owned());
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the emulator did not start listening:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Self {
            child: Some(child),
            addr,
            dir,
            logs,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits until readiness answers 200.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.get("/_emulator/health/ready").await;
            if r.status == StatusCode::OK {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready in time: {}\n{}",
                String::from_utf8_lossy(&r.body),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, &[], Bytes::new()).await
    }

    /// A request to the fixture with its mode header.
    pub async fn mode(&self, path: &str, mode: &str) -> Reply {
        self.call(Method::GET, path, &[("x-fixture", mode)], Bytes::new())
            .await
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Full::new(body.into())).unwrap()).await
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        send_with(&self.client, req).await
    }

    /// The emulator's log lines so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The JSON log lines so far.
    pub fn log_json(&self) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until a log line satisfies `f`.
    pub async fn wait_log(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(v) = self.log_json().into_iter().find(|v| f(v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no log line {what}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// Waits for the emulator to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the emulator did not exit in time:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The emulator's direct children: (pid, state letter).
    pub fn children(&self) -> Vec<(i32, char)> {
        children_of(self.pid() as i32)
    }

    /// Asserts no child of the emulator is a zombie, allowing a moment for
    /// an exit being handled right now.
    pub async fn assert_no_zombies(&self) {
        for _ in 0..50 {
            if !self.children().iter().any(|(_, s)| *s == 'Z') {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("zombie children: {:?}", self.children());
    }

    /// Health document.
    pub async fn health(&self) -> (StatusCode, Value) {
        let r = self.get("/_emulator/health/ready").await;
        (r.status, r.json())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- emulator log ----\n{}", self.log_text());
        }
        if let Some(mut child) = self.child.take()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub async fn send_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Reply {
    let what = format!("{} {}", req.method(), req.uri());
    let exchange = async {
        let response = client.request(req).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    match tokio::time::timeout(HTTP_LIMIT, exchange).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no answer within {HTTP_LIMIT:?}"),
    }
}

/// A plain HTTP client for the runtime API.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Direct children of a process: (pid, state letter).
pub fn children_of(parent: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut fields = rest.split(' ');
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent {
            out.push((pid, state));
        }
    }
    out
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rfind(')')
            .is_some_and(|i| stat[i + 2..].starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until a process is gone.
pub async fn wait_gone(pid: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Distinct values.
pub fn distinct<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> usize {
    items.into_iter().collect::<HashSet<_>>().len()
}
