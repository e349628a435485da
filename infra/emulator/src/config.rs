//! The emulator's own settings: command line flags, each with an environment
//! variable, and the defaults that make the container work without any.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Command line and environment of the emulator.
#[derive(Debug, Parser)]
#[command(name = "emulator", version, about)]
pub struct Cli {
    /// The routes file (default: `routes.toml` beside the executable).
    #[arg(long, env = "EMULATOR_ROUTES")]
    pub routes: Option<PathBuf>,

    /// Directory holding the function binaries (default: the executable's).
    #[arg(long, env = "EMULATOR_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,

    /// HTTP port; 0 picks a free one (logged in the `listening` line).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on. The container needs every interface; a local
    /// run can use 127.0.0.1.
    #[arg(long, env = "EMULATOR_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Requests waiting for an instance, per function, beyond which the
    /// emulator answers 503 (a function's `queue_depth` overrides it).
    #[arg(long, env = "EMULATOR_QUEUE_DEPTH", default_value_t = 64)]
    pub queue_depth: usize,

    /// Seconds an instance above the function's `min_warm` may stay idle
    /// before it is stopped.
    #[arg(long, env = "EMULATOR_IDLE_TIMEOUT_SECONDS", default_value_t = 300.0)]
    pub idle_timeout_seconds: f64,

    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "EMULATOR_SHUTDOWN_GRACE_SECONDS", default_value_t = 10.0)]
    pub shutdown_grace_seconds: f64,

    /// Seconds a client gets to send its request headers (slowloris guard).
    #[arg(long, env = "EMULATOR_HEADER_TIMEOUT_SECONDS", default_value_t = 10.0)]
    pub header_timeout_seconds: f64,

    /// Log format: `text` or `json` (JSON also when
    /// `AWS_LAMBDA_LOG_FORMAT=JSON`).
    #[arg(long, env = "EMULATOR_LOG_FORMAT")]
    pub log_format: Option<String>,

    /// Validate the routes file (and exit 0, or 2 naming the problem).
    #[arg(long)]
    pub check: bool,
}

/// Settings after defaults are applied.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The routes file.
    pub routes: PathBuf,
    /// The binaries directory.
    pub bin_dir: PathBuf,
    /// Listen address.
    pub bind: IpAddr,
    /// Listen port.
    pub port: u16,
    /// Global queue depth per function.
    pub queue_depth: usize,
    /// Idle timeout of instances above the minimum.
    pub idle_timeout: Duration,
    /// Grace period for in-flight requests on shutdown.
    pub shutdown_grace: Duration,
    /// Time allowed to read request headers.
    pub header_timeout: Duration,
}

/// Settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A duration is negative, not a number or absurd.
    #[error("{name} must be a number of seconds between 0 and 86400, got {value}")]
    Duration {
        /// The flag or variable.
        name: &'static str,
        /// What was given.
        value: f64,
    },
    /// A count must be positive.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The executable's directory is unknown, so defaults cannot be found.
    #[error("cannot locate the emulator executable to find its defaults: {0}")]
    Exe(#[source] std::io::Error),
}

impl Cli {
    /// Applies the defaults that depend on where the executable is.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let exe_dir = || -> Result<PathBuf, ConfigError> {
            let exe = std::env::current_exe().map_err(ConfigError::Exe)?;
            Ok(exe
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".")))
        };
        let routes = match &self.routes {
            Some(r) => r.clone(),
            None => exe_dir()?.join("routes.toml"),
        };
        let bin_dir = match &self.bin_dir {
            Some(d) => d.clone(),
            None => exe_dir()?,
        };
        if self.queue_depth == 0 {
            return Err(ConfigError::Zero("EMULATOR_QUEUE_DEPTH"));
        }
        Ok(Settings {
            routes,
            bin_dir,
            bind: self.bind,
            port: self.port,
            queue_depth: self.queue_depth,
            idle_timeout: seconds("EMULATOR_IDLE_TIMEOUT_SECONDS", self.idle_timeout_seconds)?,
            shutdown_grace: seconds(
                "EMULATOR_SHUTDOWN_GRACE_SECONDS",
                self.shutdown_grace_seconds,
            )?,
            header_timeout: seconds(
                "EMULATOR_HEADER_TIMEOUT_SECONDS",
                self.header_timeout_seconds,
            )?,
        })
    }

    /// Whether logs are JSON lines.
    pub fn json_logs(&self) -> bool {
        let lambda_json =
            std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
        match &self.log_format {
            Some(f) => f.eq_ignore_ascii_case("json"),
            None => lambda_json,
        }
    }
}

fn seconds(name: &'static str, value: f64) -> Result<Duration, ConfigError> {
    if value.is_finite() && (0.0..=86_400.0).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(ConfigError::Duration { name, value })
    }
}
