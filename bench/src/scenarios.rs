//! The measurements, in the order they run: set-up (key, table, the
//! emulator, `cargo lambda watch`, nginx), idle memory, JWKS load, token
//! signing, login, register, memory after load, cold starts and the
//! emulator's start-up. Each comparison alternates its sides round by round
//! (rotating which side goes first), so drifting background load hits
//! every side alike.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http::Method;
use users::domain::{Email, Password, UserId, UserName};
use users::keys::SigningKey;
use users::password::{Argon2Policy, PasswordHasher, StoredHash};
use users::store::dynamo::DynamoStore;
use users::store::{AccountStatus, FindUserByEmail as _, User};
use users::token::TokenIssuer;

use crate::Cli;
use crate::load::{self, Plan, Target};
use crate::procs::{self, Service, loopback};
use crate::stats::{Samples, median};

/// Connection counts of the JWKS comparison.
pub const JWKS_CONNECTIONS: [usize; 3] = [1, 16, 64];
/// Client counts of the login throughput comparison.
pub const LOGIN_CLIENTS: [usize; 2] = [2, 16];
/// Concurrent clients of the register run.
pub const REGISTER_CLIENTS: usize = 16;
/// The password of the benchmark's accounts.
const PASSWORD: &str = "correct horse battery staple";
const LOGIN_EMAIL: &str = "bench-login@example.com";
/// Sequential logins (and bare verifications) per latency round.
const LOGIN_LATENCY_PER_ROUND: u64 = 20;
/// Latency rounds of the login comparison.
const LOGIN_LATENCY_ROUNDS: usize = 5;
/// Cold starts measured per function.
const COLD_SAMPLES: usize = 8;
/// Emulator start-ups measured per configuration.
const STARTUP_SAMPLES: usize = 5;
/// Time any one service gets to come up.
const START_LIMIT: Duration = Duration::from_secs(30);

/// One side of a comparison: per-round figures and all latencies.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// Its name in tables and the chart.
    pub name: String,
    /// Requests (or operations) per second, per round.
    pub rps: Vec<f64>,
    /// p50 per round, ms.
    pub p50: Vec<f64>,
    /// p99 per round, ms.
    pub p99: Vec<f64>,
    /// Every latency of every round.
    pub all: Samples,
    /// Unexpected statuses and transport errors.
    pub errors: u64,
}

impl Side {
    fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    fn add(&mut self, outcome: &load::Outcome, expected: u16) {
        self.rps.push(outcome.rps());
        self.p50.push(outcome.latencies.p50_ms());
        self.p99.push(outcome.latencies.p99_ms());
        self.all.extend(&outcome.latencies);
        self.errors += outcome.unexpected(expected);
    }

    fn add_samples(&mut self, samples: &Samples) {
        self.rps.push(1000.0 / samples.mean_ms());
        self.p50.push(samples.p50_ms());
        self.p99.push(samples.p99_ms());
        self.all.extend(samples);
    }
}

/// The JWKS comparison at one connection count.
#[derive(Debug, Clone)]
pub struct JwksRow {
    /// Concurrent connections.
    pub connections: usize,
    /// emulator, cargo lambda watch, nginx.
    pub sides: Vec<Side>,
    /// Per-round ratios emulator/watch of requests/s.
    pub vs_watch: Vec<f64>,
    /// Per-round ratios emulator/nginx of requests/s.
    pub vs_nginx: Vec<f64>,
}

/// Login throughput at one client count.
#[derive(Debug, Clone)]
pub struct LoginRow {
    /// Concurrent clients.
    pub clients: usize,
    /// Logins through the emulator.
    pub side: Side,
    /// The Argon2 ceiling per round: cores ÷ bare verification time.
    pub ceiling: Vec<f64>,
    /// Per-round logins/s ÷ ceiling.
    pub ratio: Vec<f64>,
}

/// Resident memory of a process tree.
#[derive(Debug, Clone, Default)]
pub struct Rss {
    /// Total KiB.
    pub total_kib: u64,
    /// Each process: command, KiB.
    pub each: Vec<(String, u64)>,
}

impl Rss {
    fn of(pid: u32) -> Self {
        let (total_kib, each) = procs::tree_rss(pid);
        Self { total_kib, each }
    }
}

/// Everything measured.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// JWKS rows.
    pub jwks: Vec<JwksRow>,
    /// The JWKS document's size in bytes.
    pub jwks_bytes: usize,
    /// Sequential login latency through the emulator.
    pub login_latency: Side,
    /// Bare Argon2id verification, same parameters, in process.
    pub verify_latency: Side,
    /// Bare verifications as the login makes them: one `verify_blocking`
    /// call each (diagnostic).
    pub verify_pooled: Side,
    /// Minor page faults per verification: in one loop, and one call each.
    pub faults_per_verify: (u64, u64),
    /// The login's store read alone, in process.
    pub store_read: Side,
    /// Per-round ratios of the p50s (login ÷ verify).
    pub login_p50_ratio: Vec<f64>,
    /// Login throughput rows.
    pub login_rows: Vec<LoginRow>,
    /// Bare verifications per second with one thread per core, per round.
    pub verify_parallel: Vec<f64>,
    /// Registrations with 16 clients.
    pub register: Side,
    /// Bare hashes' ceiling (cores ÷ hash time) per round.
    pub register_ceiling: Vec<f64>,
    /// 201s in the register run.
    pub registered: u64,
    /// Statuses of 16 simultaneous registrations of one email.
    pub race: Vec<(u16, u64)>,
    /// Accounts expected in the table afterwards.
    pub expected_count: u64,
    /// Accounts counted in the table afterwards.
    pub counted: u64,
    /// RS256 signatures with our code.
    pub sign_ours: Side,
    /// `openssl speed rsa2048` sign time per round, ms.
    pub sign_openssl_ms: Vec<f64>,
    /// Cold starts per function (register, login, jwks, hello).
    pub cold: Vec<Side>,
    /// Emulator start-to-ready: the production routes, and hello only.
    pub startup: Vec<Side>,
    /// Memory: idle after start.
    pub rss_idle: Rss,
    /// Memory during the 64-connection JWKS load, per emulator round.
    pub rss_load: Vec<Rss>,
    /// Memory after the login and register loads.
    pub rss_after: Rss,
    /// Load average at start and end.
    pub load_before: String,
    /// Load average at the end.
    pub load_after: String,
    /// Wall time of the measurements.
    pub elapsed: Duration,
    /// Notes for the document (warnings, what was skipped).
    pub notes: Vec<String>,
}

/// Shared set-up: paths and the environment every process needs.
struct Bench {
    bin: PathBuf,
    tmp: PathBuf,
    key: PathBuf,
    rounds: usize,
    seconds: Duration,
}

impl Bench {
    fn binary(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.tmp.join(format!("{name}.log"))
    }

    fn admin(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(self.binary("users-admin"))
            .args(args)
            .output()
            .context("running users-admin")?;
        if !out.status.success() {
            bail!(
                "users-admin {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The emulator on `routes`, with extra environment.
    fn emulator(
        &self,
        name: &str,
        routes: &Path,
        port: u16,
        env: &[(&str, &str)],
    ) -> Result<Service> {
        let mut cmd = Command::new(self.binary("emulator"));
        cmd.env("PORT", port.to_string())
            .env("EMULATOR_BIND", "127.0.0.1")
            .env("EMULATOR_ROUTES", routes)
            .env("EMULATOR_BIN_DIR", &self.bin)
            .env("JWT_PRIVATE_KEY_FILE", &self.key)
            .env("JWT_ISSUER", format!("http://127.0.0.1:{port}"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Service::start(name, cmd, &self.log(name))
    }

    fn plan(&self, connections: usize, warmup: Duration) -> Plan {
        Plan {
            connections,
            warmup,
            duration: self.seconds,
            max_requests: None,
        }
    }
}

/// Removes the temporary folder when the run ends, however it ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn say(text: &str) {
    eprintln!("users-bench: {text}");
}

/// Runs every measurement.
pub async fn run_all(cli: &Cli, root: &Path, bin: &Path) -> Result<Results> {
    let started = Instant::now();
    let tmp = std::env::temp_dir().join(format!("users-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let _tmp_guard = TempDir(tmp.clone());
    let b = Bench {
        bin: bin.to_owned(),
        key: tmp.join("signing-key.pem"),
        tmp,
        rounds: cli.rounds.max(1),
        seconds: Duration::from_secs_f64(cli.seconds.clamp(0.5, 30.0)),
    };
    let mut r = Results {
        load_before: loadavg(),
        ..Results::default()
    };

    say("set-up: signing key, table");
    b.admin(&["keygen", "--out", &b.key.to_string_lossy()])?;
    b.admin(&["create-table"])?;

    let emu_port = procs::free_port()?;
    let emu_addr = loopback(emu_port);
    let routes = root.join("infra/routes.toml");
    let mut emulator = b.emulator("emulator", &routes, emu_port, &[])?;
    emulator
        .wait_http_ok(
            emu_addr,
            "/_emulator/health/ready",
            Instant::now(),
            Duration::from_millis(20),
            START_LIMIT,
        )
        .await?;
    let (status, jwks_body, _) =
        load::once(emu_addr, Method::GET, "/.well-known/jwks.json", None).await?;
    if status != 200 {
        bail!("jwks through the emulator answered {status}");
    }
    r.jwks_bytes = jwks_body.len();

    let want = |section: &str| {
        cli.only
            .as_deref()
            .is_none_or(|only| only.split(',').any(|s| s.trim() == section))
    };
    if want("jwks") {
        jwks_section(cli, &b, root, &emulator, emu_addr, &jwks_body, &mut r).await?;
    }
    if want("sign") {
        say("token signing: ours vs openssl speed rsa2048");
        sign_section(&b, &mut r).await?;
    }
    if want("login") {
        say("login: through the emulator vs bare Argon2id");
        login_section(&b, emu_addr, &mut r).await?;
    }
    if want("register") {
        say("register: 16 clients against the store");
        register_section(&b, emu_addr, &mut r).await?;
    }
    r.rss_after = Rss::of(emulator.pid());
    emulator.check_alive()?;
    drop(emulator);
    if want("cold") {
        say("cold starts: each function vs hello-world");
        cold_section(&b, &mut r).await?;
    }
    if want("startup") {
        say("emulator start-to-ready");
        startup_section(&b, &routes, &mut r).await?;
    }
    r.load_after = loadavg();
    r.elapsed = started.elapsed();
    Ok(r)
}

/// JWKS through the emulator vs `cargo lambda watch` vs nginx, and the
/// memory idle and under load.
async fn jwks_section(
    cli: &Cli,
    b: &Bench,
    root: &Path,
    emulator: &Service,
    emu_addr: SocketAddr,
    jwks_body: &Bytes,
    r: &mut Results,
) -> Result<()> {
    say("set-up: cargo lambda watch with the jwks binary");
    let watch_port = procs::free_port()?;
    let watch_addr = loopback(watch_port);
    let cargo_lambda = root.join(&cli.cargo_lambda);
    let mut watch_cmd = Command::new(&cargo_lambda);
    watch_cmd
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(watch_port.to_string())
        .current_dir(root);
    let mut watch = Service::start("cargo-lambda-watch", watch_cmd, &b.log("watch"))?;
    watch.wait_listening(watch_addr, START_LIMIT).await?;
    let mut jwks_cmd = Command::new(b.binary("jwks"));
    jwks_cmd
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{watch_port}/.rt/jwks"),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", "jwks")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("JWT_PRIVATE_KEY_FILE", &b.key);
    let mut watch_jwks = Service::start("jwks-under-watch", jwks_cmd, &b.log("watch-jwks"))?;
    watch_jwks.check_alive()?;
    watch
        .wait_http_ok(
            watch_addr,
            "/.well-known/jwks.json",
            Instant::now(),
            Duration::from_millis(50),
            START_LIMIT,
        )
        .await?;

    say("set-up: nginx with the same JSON as a static file");
    let nginx_port = procs::free_port()?;
    let nginx_addr = loopback(nginx_port);
    let mut nginx = start_nginx(b, nginx_port, jwks_body)?;
    nginx
        .wait_http_ok(
            nginx_addr,
            "/.well-known/jwks.json",
            Instant::now(),
            Duration::from_millis(20),
            START_LIMIT,
        )
        .await?;
    let (_, nginx_body, _) =
        load::once(nginx_addr, Method::GET, "/.well-known/jwks.json", None).await?;
    if nginx_body != *jwks_body {
        bail!("nginx does not serve the same JWKS bytes");
    }

    // Idle: every function's warm instance has started and settled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.rss_idle = Rss::of(emulator.pid());

    say("jwks: emulator vs cargo lambda watch vs nginx");
    let targets = [
        Target::get(emu_addr, "/.well-known/jwks.json"),
        Target::get(watch_addr, "/.well-known/jwks.json"),
        Target::get(nginx_addr, "/.well-known/jwks.json"),
    ];
    let names = [
        "emulator + jwks",
        "cargo lambda watch + jwks",
        "nginx static file",
    ];
    for connections in JWKS_CONNECTIONS {
        let mut sides: Vec<Side> = names.iter().map(|n| Side::named(n)).collect();
        let mut vs_watch = Vec::new();
        let mut vs_nginx = Vec::new();
        for round in 0..b.rounds {
            let mut rps = [0.0f64; 3];
            for k in 0..3 {
                let side = (round + k) % 3;
                let sampler = (side == 0 && connections == 64).then(|| {
                    let pid = emulator.pid();
                    let at = Duration::from_millis(300) + b.seconds / 2;
                    tokio::spawn(async move {
                        tokio::time::sleep(at).await;
                        Rss::of(pid)
                    })
                });
                let outcome = load::run(
                    &targets[side],
                    b.plan(connections, Duration::from_millis(300)),
                )
                .await?;
                if let Some(s) = sampler {
                    r.rss_load.push(s.await?);
                }
                rps[side] = outcome.rps();
                sides[side].add(&outcome, 200);
            }
            vs_watch.push(rps[0] / rps[1]);
            vs_nginx.push(rps[0] / rps[2]);
            say(&format!(
                "  {connections} conn, round {}: {:.0} / {:.0} / {:.0} req/s",
                round + 1,
                rps[0],
                rps[1],
                rps[2]
            ));
        }
        r.jwks.push(JwksRow {
            connections,
            sides,
            vs_watch,
            vs_nginx,
        });
    }
    // The references are done: stop them so they cost nothing below.
    drop(nginx);
    drop(watch_jwks);
    drop(watch);
    Ok(())
}

fn start_nginx(b: &Bench, port: u16, body: &[u8]) -> Result<Service> {
    let dir = b.tmp.join("nginx");
    let www = dir.join("www/.well-known");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("jwks.json"), body)?;
    let d = dir.display();
    // Two workers (one per core), no access log, keep-alive without a
    // request cap: the practical ceiling for serving these bytes.
    let conf = format!(
        r#"worker_processes auto;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 60s;
    sendfile on;
    tcp_nodelay on;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        location = /.well-known/jwks.json {{
            default_type application/json;
            add_header Cache-Control "public, max-age=300";
        }}
    }}
}}
"#
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nginx");
    let mut cmd = Command::new(nginx);
    cmd.arg("-e")
        .arg(dir.join("startup.log"))
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf_path);
    Service::start("nginx", cmd, &b.log("nginx"))
}

/// `n` timed runs of `f` on the blocking pool.
async fn timed<F>(n: usize, f: F) -> Result<Samples>
where
    F: Fn() -> Result<()> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut d = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            f()?;
            d.push(t.elapsed());
        }
        Ok(Samples::from_durations(d))
    })
    .await?
}

/// Runs `f` for about `limit` (at most `max` times).
async fn timed_for<F>(limit: Duration, max: usize, f: F) -> Result<Samples>
where
    F: Fn() -> Result<()> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut d = Vec::new();
        let end = Instant::now() + limit;
        while Instant::now() < end && d.len() < max {
            let t = Instant::now();
            f()?;
            d.push(t.elapsed());
        }
        Ok(Samples::from_durations(d))
    })
    .await?
}

/// Minor page faults of this process so far (`/proc/self/stat` field 10).
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(7))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

fn password() -> Result<Password> {
    Password::parse_new(PASSWORD.to_owned()).map_err(anyhow::Error::msg)
}

/// A verifier for the benchmark's password under the OWASP policy (the
/// functions' default): the same work a login does.
fn verifier() -> Result<Arc<dyn Fn() -> Result<()> + Send + Sync>> {
    let hasher = PasswordHasher::new(Argon2Policy::OWASP)?;
    let pw = password()?;
    let stored = hasher.hash(&pw)?;
    Ok(Arc::new(move || {
        let v = hasher.verify(&pw, &stored)?;
        if !v.matched {
            bail!("bare verification did not match");
        }
        Ok(())
    }))
}

fn hasher_fn() -> Result<Arc<dyn Fn() -> Result<()> + Send + Sync>> {
    let hasher = PasswordHasher::new(Argon2Policy::OWASP)?;
    let pw = password()?;
    Ok(Arc::new(move || {
        hasher.hash(&pw)?;
        Ok(())
    }))
}

fn json(value: &serde_json::Value) -> Bytes {
    Bytes::from(value.to_string())
}

async fn sign_section(b: &Bench, r: &mut Results) -> Result<()> {
    let pem = std::fs::read_to_string(&b.key)?;
    let key = SigningKey::from_pem(&pem)?;
    let issuer = Arc::new(TokenIssuer::new(
        key,
        "http://127.0.0.1:8080".to_owned(),
        "shop-example".to_owned(),
        900,
    ));
    let user = Arc::new(User {
        id: UserId::new_random(),
        name: UserName::parse("Bench User").map_err(anyhow::Error::msg)?,
        email: Email::parse("bench@example.com").map_err(anyhow::Error::msg)?,
        password_hash: StoredHash::from_stored(String::new()),
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        status: AccountStatus::Active,
    });
    let mut ours = Side::named("TokenIssuer::issue (RS256)");
    for _ in 0..b.rounds {
        let (issuer, user) = (issuer.clone(), user.clone());
        let samples = timed_for(Duration::from_secs(1), 100_000, move || {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            issuer.issue(&user, now, uuid::Uuid::new_v4())?;
            Ok(())
        })
        .await?;
        ours.add_samples(&samples);
        r.sign_openssl_ms.push(openssl_sign_ms().await?);
    }
    r.sign_ours = ours;
    Ok(())
}

/// `openssl speed -seconds 1 rsa2048`'s sign time in ms.
async fn openssl_sign_ms() -> Result<f64> {
    let out = tokio::process::Command::new("openssl")
        .args(["speed", "-seconds", "1", "rsa2048"])
        .output()
        .await
        .context("running openssl speed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "rsa 2048 bits 0.000612s 0.000018s 1634.0 55000.0"
    text.lines()
        .find(|l| l.trim_start().starts_with("rsa 2048 bits"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.trim_end_matches('s').parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .with_context(|| format!("cannot read openssl speed's output:\n{text}"))
}

async fn login_section(b: &Bench, emu: SocketAddr, r: &mut Results) -> Result<()> {
    let body = json(&serde_json::json!({
        "name": "Bench Login", "email": LOGIN_EMAIL, "password": PASSWORD
    }));
    let (status, text, _) = load::once(emu, Method::POST, "/api/v1/users", Some(body)).await?;
    if status != 201 {
        bail!(
            "registering the login account: {status} {}",
            String::from_utf8_lossy(&text)
        );
    }
    let login_body: Bytes = json(&serde_json::json!({"email": LOGIN_EMAIL, "password": PASSWORD}));
    let target = Target::post(
        emu,
        "/api/v1/users/login",
        Arc::new(move |_| login_body.clone()),
    );
    let verify = verifier()?;

    // Latency: one client, sequential logins vs sequential verifications.
    let mut login = Side::named("login through the emulator");
    let mut bare = Side::named("bare Argon2id verify");
    // The store read a login makes, alone, for the breakdown.
    let store =
        DynamoStore::connect(&std::env::var("USERS_TABLE").unwrap_or_else(|_| "users".into()))
            .await?;
    let email = Email::parse(LOGIN_EMAIL).map_err(anyhow::Error::msg)?;
    let mut read = Side::named("store read (GetItem, in process)");
    let mut pooled = Side::named("verify_blocking, one call per verification");
    let hasher = Arc::new(PasswordHasher::new(Argon2Policy::OWASP)?);
    let stored = hasher.hash(&password()?)?;
    let (mut bare_faults, mut pooled_faults) = (0u64, 0u64);
    for round in 0..LOGIN_LATENCY_ROUNDS {
        let mut d = Vec::new();
        for _ in 0..LOGIN_LATENCY_PER_ROUND {
            let t = Instant::now();
            store
                .find_by_email(&email)
                .await?
                .context("the login account is missing")?;
            d.push(t.elapsed());
        }
        read.add_samples(&Samples::from_durations(d));
        for k in 0..2 {
            if (round + k) % 2 == 0 {
                let outcome = load::run(
                    &target,
                    Plan {
                        connections: 1,
                        warmup: Duration::ZERO,
                        duration: Duration::from_secs(30),
                        max_requests: Some(LOGIN_LATENCY_PER_ROUND),
                    },
                )
                .await?;
                login.add(&outcome, 200);
            } else {
                let v = verify.clone();
                let faults = minor_faults();
                let samples = timed(LOGIN_LATENCY_PER_ROUND as usize, move || v()).await?;
                bare_faults += minor_faults().saturating_sub(faults);
                bare.add_samples(&samples);
                // As the login calls it: each verification on the blocking
                // pool by itself (diagnostic, not the target's reference).
                let mut d = Vec::new();
                let faults = minor_faults();
                for _ in 0..LOGIN_LATENCY_PER_ROUND {
                    let t = Instant::now();
                    let (v, _) = hasher.verify_blocking(password()?, stored.clone()).await?;
                    if !v.matched {
                        bail!("verify_blocking did not match");
                    }
                    d.push(t.elapsed());
                }
                pooled_faults += minor_faults().saturating_sub(faults);
                pooled.add_samples(&Samples::from_durations(d));
            }
        }
        r.login_p50_ratio.push(login.p50[round] / bare.p50[round]);
    }
    r.login_latency = login;
    r.verify_latency = bare;
    r.store_read = read;
    let n = (LOGIN_LATENCY_ROUNDS as u64 * LOGIN_LATENCY_PER_ROUND).max(1);
    r.faults_per_verify = (bare_faults / n, pooled_faults / n);
    r.verify_pooled = pooled;

    // Throughput: logins/s at 2 and 16 clients vs cores ÷ verify time.
    for clients in LOGIN_CLIENTS {
        let mut row = LoginRow {
            clients,
            side: Side::named(&format!("{clients} clients")),
            ceiling: Vec::new(),
            ratio: Vec::new(),
        };
        for _ in 0..b.rounds {
            let outcome = load::run(&target, b.plan(clients, Duration::from_secs(1))).await?;
            row.side.add(&outcome, 200);
            let v = verify.clone();
            let samples = timed_for(Duration::from_secs(1), 40, move || v()).await?;
            let ceiling = cores() / (samples.p50_ms() / 1000.0);
            row.ceiling.push(ceiling);
            row.ratio.push(outcome.rps() / ceiling);
            say(&format!(
                "  {clients} clients: {:.1} logins/s, ceiling {ceiling:.1}/s",
                outcome.rps()
            ));
        }
        r.login_rows.push(row);
    }

    // The measured ceiling: one verifying thread per core, nothing else.
    for _ in 0..b.rounds {
        let threads = cores() as usize;
        let started = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..threads {
            let v = verify.clone();
            handles.push(timed_for(Duration::from_secs(1), 100, move || v()));
        }
        let mut done = 0usize;
        for h in handles {
            done += h.await?.len();
        }
        r.verify_parallel
            .push(done as f64 / started.elapsed().as_secs_f64());
    }
    Ok(())
}

async fn register_section(b: &Bench, emu: SocketAddr, r: &mut Results) -> Result<()> {
    let hash = hasher_fn()?;
    let mut side = Side::named("register through the emulator, 16 clients");
    for round in 0..b.rounds {
        let run_id = std::process::id();
        let body: load::BodyFn = Arc::new(move |n| {
            json(&serde_json::json!({
                "name": "Bench User",
                "email": format!("bench-{run_id}-{round}-{n}@example.com"),
                "password": PASSWORD,
            }))
        });
        let target = Target::post(emu, "/api/v1/users", body);
        let outcome = load::run(
            &target,
            b.plan(REGISTER_CLIENTS, Duration::from_millis(500)),
        )
        .await?;
        r.registered += outcome.count(201);
        side.add(&outcome, 201);
        let h = hash.clone();
        let samples = timed_for(Duration::from_secs(1), 40, move || h()).await?;
        r.register_ceiling
            .push(cores() / (samples.p50_ms() / 1000.0));
        say(&format!(
            "  round {}: {:.1} registrations/s",
            round + 1,
            outcome.rps()
        ));
    }
    r.register = side;

    // Sixteen clients register one email at once: exactly one may win.
    let race_email = format!("bench-race-{}@example.com", std::process::id());
    let body = json(&serde_json::json!({
        "name": "Bench Race", "email": race_email, "password": PASSWORD
    }));
    let target = Target::post(emu, "/api/v1/users", Arc::new(move |_| body.clone()));
    let outcome = load::run(
        &target,
        Plan {
            connections: REGISTER_CLIENTS,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(30),
            max_requests: Some(REGISTER_CLIENTS as u64),
        },
    )
    .await?;
    r.race = outcome.statuses.iter().map(|(s, n)| (*s, *n)).collect();
    if outcome.errors > 0 {
        r.race.push((0, outcome.errors));
    }
    // The login account, every 201 of the run, and the race's winner.
    r.expected_count = 1 + r.registered + outcome.count(201);
    r.counted = b
        .admin(&["count-users"])?
        .parse()
        .context("count-users printed no number")?;
    Ok(())
}

/// A routes file whose functions all start on demand (`min_warm = 0`) and
/// stop after 0.1 s idle, so every request below meets a cold start.
fn cold_routes(hello_only: bool, min_warm: usize) -> String {
    let mut t = String::new();
    let functions: &[(&str, &str, &str, &str)] = if hello_only {
        &[("hello", "bench-hello", "GET", "/hello")]
    } else {
        &[
            ("register", "register", "POST", "/api/v1/users"),
            ("login", "login", "POST", "/api/v1/users/login"),
            ("jwks", "jwks", "GET", "/.well-known/jwks.json"),
            ("hello", "bench-hello", "GET", "/hello"),
        ]
    };
    for (name, _, method, path) in functions {
        let _ = writeln!(
            t,
            "[[routes]]\nmethod = \"{method}\"\npath = \"{path}\"\nfunction = \"{name}\"\n"
        );
    }
    for (name, binary, _, _) in functions {
        let _ = writeln!(
            t,
            "[functions.{name}]\nbinary = \"{binary}\"\ntimeout_seconds = 10\nmemory_mb = 256\nmin_warm = {min_warm}\nmax_concurrency = 1\n"
        );
    }
    t
}

async fn cold_section(b: &Bench, r: &mut Results) -> Result<()> {
    let routes = b.tmp.join("cold-routes.toml");
    std::fs::write(&routes, cold_routes(false, 0))?;
    let port = procs::free_port()?;
    let addr = loopback(port);
    let mut emu = b.emulator(
        "emulator-cold",
        &routes,
        port,
        &[("EMULATOR_IDLE_TIMEOUT_SECONDS", "0.1")],
    )?;
    emu.wait_http_ok(
        addr,
        "/_emulator/health/live",
        Instant::now(),
        Duration::from_millis(20),
        START_LIMIT,
    )
    .await?;
    let functions: [(&str, Method, &str, Option<Bytes>, u16); 4] = [
        (
            "register",
            Method::POST,
            "/api/v1/users",
            Some(Bytes::from_static(b"{}")),
            400,
        ),
        (
            "login",
            Method::POST,
            "/api/v1/users/login",
            Some(Bytes::from_static(b"{}")),
            400,
        ),
        ("jwks", Method::GET, "/.well-known/jwks.json", None, 200),
        ("hello", Method::GET, "/hello", None, 200),
    ];
    let mut sides: Vec<Side> = functions.iter().map(|f| Side::named(f.0)).collect();
    let mut each: Vec<Vec<Duration>> = vec![Vec::new(); functions.len()];
    for i in 0..COLD_SAMPLES {
        for k in 0..functions.len() {
            let j = (i + k) % functions.len();
            let (_, method, path, body, expected) = &functions[j];
            wait_no_children(&mut emu).await?;
            let (status, text, latency) =
                load::once(addr, method.clone(), path, body.clone()).await?;
            if status != *expected {
                bail!(
                    "cold start of {}: {status} {}",
                    functions[j].0,
                    String::from_utf8_lossy(&text)
                );
            }
            each[j].push(latency);
        }
    }
    for (side, d) in sides.iter_mut().zip(each) {
        side.add_samples(&Samples::from_durations(d));
    }
    r.cold = sides;
    Ok(())
}

/// Waits until the emulator has no child process left (every instance was
/// stopped as idle and has exited).
async fn wait_no_children(emu: &mut Service) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while procs::tree(emu.pid()).len() > 1 {
        emu.check_alive()?;
        if Instant::now() > deadline {
            bail!("idle instances were not stopped within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the exit settle (the emulator reaps and logs it).
    tokio::time::sleep(Duration::from_millis(30)).await;
    Ok(())
}

async fn startup_section(b: &Bench, routes: &Path, r: &mut Results) -> Result<()> {
    let hello_routes = b.tmp.join("hello-routes.toml");
    std::fs::write(&hello_routes, cold_routes(true, 1))?;
    let configs = [
        ("emulator + register, login, jwks", routes.to_owned()),
        ("emulator + hello only", hello_routes),
    ];
    let mut sides: Vec<Side> = configs.iter().map(|c| Side::named(c.0)).collect();
    let mut each: Vec<Vec<Duration>> = vec![Vec::new(); configs.len()];
    for i in 0..STARTUP_SAMPLES {
        for k in 0..configs.len() {
            let j = (i + k) % configs.len();
            let port = procs::free_port()?;
            let started = Instant::now();
            let mut emu = b.emulator("emulator-startup", &configs[j].1, port, &[])?;
            let took = emu
                .wait_http_ok(
                    loopback(port),
                    "/_emulator/health/ready",
                    started,
                    Duration::from_millis(2),
                    START_LIMIT,
                )
                .await?;
            each[j].push(took);
            emu.stop(Duration::from_secs(10));
        }
    }
    for (side, d) in sides.iter_mut().zip(each) {
        side.add_samples(&Samples::from_durations(d));
    }
    r.startup = sides;
    Ok(())
}

/// The median of per-round figures.
pub fn med(values: &[f64]) -> f64 {
    median(values)
}
