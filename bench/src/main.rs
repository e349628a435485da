//! `users-bench`: the benchmark behind `make bench`. It measures the users
//! service beside its references in one run, on loopback, and writes
//! `docs/benchmarks.md` and `docs/benchmarks-latency.svg`:
//!
//! - JWKS through the emulator vs the same binary under `cargo lambda
//!   watch` vs the same JSON as a static file from nginx;
//! - login through the emulator vs a bare Argon2id verification;
//! - register throughput against the DynamoDB endpoint, with a count
//!   proving nothing was lost or duplicated;
//! - one RS256 signature vs `openssl speed rsa2048`;
//! - cold starts vs a hello-world `lambda_http` binary;
//! - binary sizes, image size and resident memory.
//!
//! The machines are shared and noisy, so every comparison alternates its
//! sides in short rounds and reports medians and per-round ratios. Every
//! load loop is bounded in time and count. It expects `AWS_ENDPOINT_URL`
//! (the Makefile runs it under `infra/local/with-dynamodb.sh`).

mod chart;
mod load;
mod procs;
mod report;
mod scenarios;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser;

/// Command line of `users-bench`.
#[derive(Debug, Parser)]
#[command(
    name = "users-bench",
    about = "Benchmarks of the users service beside their references"
)]
pub struct Cli {
    /// Workspace root: routes file, `cargo lambda watch`'s working directory.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Directory of the release binaries (default: this executable's).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Directory the document and the chart are written to.
    #[arg(long, default_value = "docs")]
    pub out: PathBuf,
    /// Rounds per comparison (each round runs every side once).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Recorded seconds per load run.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// The `cargo-lambda` executable (relative to the root).
    #[arg(long, default_value = ".venv/bin/cargo-lambda")]
    pub cargo_lambda: PathBuf,
    /// Run only these sections (comma-separated: jwks, sign, login,
    /// register, cold, startup), for development; the document then has
    /// gaps.
    #[arg(long)]
    pub only: Option<String>,
    /// The command quoted in the document as the way to reproduce it.
    #[arg(long, default_value = "make bench")]
    pub command: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Two workers: like wrk's default of two threads, enough to keep 64
        // connections busy without taking more of a small machine's cores
        // away from the servers than needed.
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("users-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("users-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let root = std::fs::canonicalize(&cli.root).context("workspace root")?;
    let bin_dir = match &cli.bin_dir {
        Some(d) => std::fs::canonicalize(d).context("--bin-dir")?,
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .context("locating the binaries")?,
    };
    let out = if cli.out.is_absolute() {
        cli.out.clone()
    } else {
        root.join(&cli.out)
    };
    std::env::var("AWS_ENDPOINT_URL").context(
        "AWS_ENDPOINT_URL is not set: run under infra/local/with-dynamodb.sh (make bench does)",
    )?;
    let results = scenarios::run_all(&cli, &root, &bin_dir).await?;
    report::write(&cli, &root, &bin_dir, &out, &results)?;
    eprintln!(
        "users-bench: wrote {} and {}",
        out.join(report::DOC).display(),
        out.join(report::CHART).display()
    );
    Ok(())
}
