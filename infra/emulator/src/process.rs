//! Process supervision: starting a function instance as a child process,
//! passing its output through line by line, stopping it (SIGTERM, then
//! SIGKILL) and, when the emulator is PID 1, reaping orphaned grandchildren.
//!
//! Every child is awaited by its own supervisor task, so tokio reaps it and
//! its exit status reaches the pool; nothing a child does can take the
//! emulator down or leave a zombie behind.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// How long a child gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);
/// Longest output line passed through as one log line; longer lines are
/// split, so a child cannot make the emulator buffer without bound.
const MAX_LINE: u64 = 64 * 1024;

/// The pids of the children the emulator awaits itself: the orphan reaper
/// must leave those to tokio, or their exit status would be lost.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    pids: Arc<Mutex<HashSet<i32>>>,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.pids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What starts one function's instances.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The function's name, for log lines.
    pub function: Arc<str>,
    /// The executable.
    pub program: PathBuf,
    /// Environment set on top of the emulator's own.
    pub env: Vec<(String, String)>,
}

/// A request to a supervisor.
#[derive(Debug, Clone, Copy)]
enum Control {
    Terminate,
    Kill,
}

/// The pool's handle on a running child.
#[derive(Debug)]
pub struct ChildHandle {
    /// The child's pid.
    pub pid: u32,
    control: mpsc::UnboundedSender<Control>,
}

impl ChildHandle {
    /// SIGTERM now, SIGKILL after [`TERM_GRACE`].
    pub fn terminate(&self) {
        let _ = self.control.send(Control::Terminate);
    }

    /// SIGKILL now.
    pub fn kill(&self) {
        let _ = self.control.send(Control::Kill);
    }
}

impl Drop for ChildHandle {
    /// A child nobody holds a handle to any more serves nobody: stop it.
    fn drop(&mut self) {
        let _ = self.control.send(Control::Kill);
    }
}

/// Starts one instance: the child, its output readers and its supervisor,
/// which calls `on_exit` once the child is gone and reaped.
pub fn spawn(
    launch: &Launch,
    instance: u64,
    extra_env: &[(&str, String)],
    tracker: &Tracker,
    on_exit: impl FnOnce(Option<ExitStatus>) + Send + 'static,
) -> std::io::Result<ChildHandle> {
    let mut command = Command::new(&launch.program);
    command
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        // One invocation per instance: the runtime must not poll concurrently.
        .env_remove("AWS_LAMBDA_MAX_CONCURRENCY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's Ctrl-C reaches the emulator
        // only (which then drains in-flight requests before stopping the
        // children), and stopping an instance stops its descendants too.
        .process_group(0)
        .kill_on_drop(true);

    let mut child = {
        // Registered under the lock, so the reaper never sees it untracked.
        let mut pids = tracker.lock();
        let child = command.spawn()?;
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            pids.insert(pid);
        }
        child
    };
    let pid = child.id().unwrap_or_default();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pass_through(
            out,
            launch.function.clone(),
            instance,
            "stdout",
        ));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pass_through(
            err,
            launch.function.clone(),
            instance,
            "stderr",
        ));
    }

    let (control, mut requests) = mpsc::unbounded_channel();
    let tracker = tracker.clone();
    let function = launch.function.clone();
    tokio::spawn(async move {
        let group = i32::try_from(pid).ok().map(Pid::from_raw);
        let mut kill_at: Option<tokio::time::Instant> = None;
        let mut open = true;
        let status = loop {
            let escalate = async {
                match kill_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = child.wait() => break status.ok(),
                request = requests.recv(), if open => match request {
                    Some(Control::Terminate) => {
                        signal_group(group, Signal::SIGTERM);
                        kill_at.get_or_insert_with(|| tokio::time::Instant::now() + TERM_GRACE);
                    }
                    Some(Control::Kill) | None => {
                        open = request.is_some();
                        signal_group(group, Signal::SIGKILL);
                        let _ = child.start_kill();
                    }
                },
                () = escalate => {
                    kill_at = None;
                    debug!(%function, instance, "instance ignored SIGTERM; sending SIGKILL");
                    signal_group(group, Signal::SIGKILL);
                    let _ = child.start_kill();
                }
            }
        };
        if let Ok(pid) = i32::try_from(pid) {
            tracker.lock().remove(&pid);
        }
        on_exit(status);
    });
    Ok(ChildHandle { pid, control })
}

fn signal_group(group: Option<Pid>, signal: Signal) {
    if let Some(group) = group {
        // ESRCH (already gone) is the expected race with the child's exit.
        let _ = killpg(group, signal);
    }
}

/// Passes a child's output through as log lines tagged with its function
/// and instance.
async fn pass_through(
    reader: impl AsyncRead + Unpin,
    function: Arc<str>,
    instance: u64,
    stream: &'static str,
) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    line.pop();
                }
                let text = String::from_utf8_lossy(&line);
                info!(target: "function", function = %function, instance, stream, "{text}");
            }
        }
    }
}

/// When the emulator is PID 1 (a container's entrypoint), orphaned
/// descendants of the functions are re-parented to it: reap them on SIGCHLD
/// and every second, leaving its own children to tokio.
pub fn start_orphan_reaper(tracker: Tracker) {
    if nix::unistd::getpid().as_raw() != 1 {
        return;
    }
    info!("running as PID 1: reaping orphaned processes");
    tokio::spawn(async move {
        let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        {
            Ok(s) => Some(s),
            Err(err) => {
                warn!(error = %err, "cannot listen for SIGCHLD; reaping once a second");
                None
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = async {
                    match sigchld.as_mut() {
                        Some(s) => { s.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
                _ = tick.tick() => {}
            }
            reap_orphans(&tracker);
        }
    });
}

fn reap_orphans(tracker: &Tracker) {
    let pids = tracker.lock();
    loop {
        // Peek (WNOWAIT) first: only a zombie that is not one of ours is
        // reaped; ours stay for their supervisors' `wait`.
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let Ok(status) = waitid(Id::All, flags) else {
            return;
        };
        let Some(pid) = status.pid() else {
            return;
        };
        if matches!(status, WaitStatus::StillAlive) || pids.contains(&pid.as_raw()) {
            return;
        }
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(_) => debug!(pid = pid.as_raw(), "reaped an orphaned process"),
            Err(_) => return,
        }
    }
}
