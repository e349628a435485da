//! The instance pool and scheduler of one function.
//!
//! An instance is one child process driven through the Runtime API. It is
//! *starting* until its first `/next`, then *parked* in `/next` (idle),
//! *busy* with one invocation, or *returned* (answered, its next `/next` not
//! yet in). Invocations go to the most recently parked instance (so extra
//! instances fall idle and are reaped), else wait in a bounded queue while a
//! new instance starts, up to `max_concurrency` instances.
//!
//! All state sits behind one short-held mutex; nothing awaits while holding
//! it. Timers (timeout, backoff, idle reaping) are tasks that re-enter
//! through the same methods, so every transition is in this file.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;
use tracing::{error, info, warn};

use crate::process::{self, ChildHandle, Launch, Tracker};
use crate::routes::FunctionSpec;

/// First delay before replacing a crashed or failed instance; doubles with
/// each consecutive failure.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest delay between attempts, so a fixed function recovers quickly.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a parked instance receives from `/next`.
#[derive(Debug)]
pub struct Assignment {
    /// `Lambda-Runtime-Aws-Request-Id`.
    pub request_id: Arc<str>,
    /// The serialised event.
    pub event: Bytes,
    /// `Lambda-Runtime-Deadline-Ms`, epoch milliseconds.
    pub deadline_ms: u64,
    /// `Lambda-Runtime-Trace-Id`.
    pub trace_id: String,
}

/// How an invocation ended.
#[derive(Debug)]
pub enum InvokeResult {
    /// The function posted a response.
    Response(Bytes),
    /// The function posted an error (logged with its type where posted).
    FunctionError,
    /// The function did not answer before its deadline.
    Timeout,
    /// The instance died during the invocation.
    Crashed,
    /// No instance could be started to serve it.
    InitFailed,
    /// The emulator is stopping.
    ShuttingDown,
}

/// An invocation's result with where it ran, for the request log.
#[derive(Debug)]
pub struct Outcome {
    /// The instance that ran it, if any did.
    pub instance: Option<u64>,
    /// Whether it was that instance's first invocation.
    pub cold: bool,
    /// The result.
    pub result: InvokeResult,
}

/// Why an invocation was refused at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Every instance is busy and the queue is full.
    QueueFull,
    /// The function fails to start and no attempt is under way.
    InitFailing,
    /// The emulator is stopping.
    ShuttingDown,
}

/// Why `/next` or a reply was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// No such instance (never was, or already gone).
    #[error("unknown instance")]
    UnknownInstance,
    /// The instance is being stopped.
    #[error("instance is stopping")]
    Stopping,
    /// The request id is unknown, finished, or not this instance's.
    #[error("unknown or finished request id")]
    UnknownRequest,
    /// An init error after initialisation.
    #[error("instance already initialised")]
    AlreadyInitialised,
}

/// A health snapshot of one pool.
#[derive(Debug, serde::Serialize)]
pub struct PoolStatus {
    /// Ready to serve: a warm instance (or none required and no failure).
    pub ready: bool,
    /// Instances past their first `/next`.
    pub warm: usize,
    /// Instances not yet polling.
    pub starting: usize,
    /// Instances running an invocation.
    pub busy: usize,
    /// Invocations waiting for an instance.
    pub queued: usize,
    /// The last instance to start failed, and none has started since.
    pub init_failing: bool,
}

enum Phase {
    Starting {
        since: Instant,
    },
    Parked {
        waiter: oneshot::Sender<Assignment>,
        since: Instant,
    },
    Busy,
    Returned,
    Stopping,
}

struct Instance {
    phase: Phase,
    /// The invocation it runs, if any (kept while stopping, so a death
    /// still answers it).
    current: Option<Arc<str>>,
    served: u64,
    init_error: bool,
    child: ChildHandle,
}

impl Instance {
    fn is_warm(&self) -> bool {
        matches!(
            self.phase,
            Phase::Parked { .. } | Phase::Busy | Phase::Returned
        )
    }
}

struct Pending {
    request_id: Arc<str>,
    event: Bytes,
    trace_id: String,
    reply: oneshot::Sender<Outcome>,
}

struct InFlight {
    instance: u64,
    cold: bool,
    reply: oneshot::Sender<Outcome>,
    timer: AbortHandle,
}

#[derive(Default)]
struct State {
    next_id: u64,
    instances: HashMap<u64, Instance>,
    /// Parked instances, most recently parked last.
    idle: Vec<u64>,
    queue: VecDeque<Pending>,
    in_flight: HashMap<Arc<str>, InFlight>,
    /// Consecutive crashes and init failures, for the backoff.
    failures: u32,
    retry_at: Option<Instant>,
    retry_scheduled: bool,
    init_failing: bool,
    /// `min_warm` instances were warm at least once: start-up is over.
    started_up: bool,
    stopping: bool,
}

impl State {
    fn count(&self, f: impl Fn(&Instance) -> bool) -> usize {
        self.instances.values().filter(|i| f(i)).count()
    }
    fn live(&self) -> usize {
        self.count(|i| !matches!(i.phase, Phase::Stopping))
    }
    /// Answers every queued request with `result` (no instance served it).
    fn fail_queued(&mut self, result: impl Fn() -> InvokeResult) {
        for pending in self.queue.drain(..) {
            let _ = pending.reply.send(Outcome {
                instance: None,
                cold: false,
                result: result(),
            });
        }
    }
    fn has_warm(&self) -> bool {
        self.instances.values().any(Instance::is_warm)
    }
    fn starting(&self) -> usize {
        self.count(|i| matches!(i.phase, Phase::Starting { .. }))
    }
}

/// Where the Runtime API listens, for children's `AWS_LAMBDA_RUNTIME_API`.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeApiAddr(pub SocketAddr);

/// Pool-wide settings that are not the function's own.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Queue depth unless the function sets its own.
    pub queue_depth: usize,
    /// Idle time after which instances above the minimum stop.
    pub idle_timeout: Duration,
}

/// One function's instances and queue.
pub struct Pool {
    /// The function's settings.
    pub spec: FunctionSpec,
    /// The function's ARN, for `Lambda-Runtime-Invoked-Function-Arn`.
    pub arn: String,
    queue_depth: usize,
    idle_timeout: Duration,
    launch: Launch,
    runtime_api: RuntimeApiAddr,
    tracker: Tracker,
    /// Signalled on readiness changes and instance exits.
    changed: Arc<Notify>,
    state: Mutex<State>,
}

impl Pool {
    /// Creates the pool; [`Pool::start`] starts its warm instances.
    pub fn new(
        spec: FunctionSpec,
        launch: Launch,
        settings: &PoolSettings,
        runtime_api: RuntimeApiAddr,
        tracker: Tracker,
        changed: Arc<Notify>,
    ) -> Arc<Self> {
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".to_owned());
        Arc::new(Self {
            arn: format!(
                "arn:aws:lambda:{region}:{}:function:{}",
                crate::event::ACCOUNT_ID,
                spec.name
            ),
            queue_depth: spec.queue_depth.unwrap_or(settings.queue_depth),
            idle_timeout: settings.idle_timeout,
            spec,
            launch,
            runtime_api,
            tracker,
            changed,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the minimum warm instances and the idle reaper.
    pub fn start(self: &Arc<Self>) {
        {
            let mut st = self.lock();
            self.reconcile(&mut st);
        }
        let pool = Arc::downgrade(self);
        let period =
            (self.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { break };
                if !pool.reap_idle() {
                    break;
                }
            }
        });
    }

    /// Submits an invocation; the receiver yields its outcome.
    pub fn invoke(
        self: &Arc<Self>,
        request_id: Arc<str>,
        event: Bytes,
        trace_id: String,
    ) -> Result<oneshot::Receiver<Outcome>, Rejected> {
        let (reply, outcome) = oneshot::channel();
        let mut pending = Pending {
            request_id,
            event,
            trace_id,
            reply,
        };
        let mut st = self.lock();
        if st.stopping {
            return Err(Rejected::ShuttingDown);
        }
        while let Some(id) = st.idle.pop() {
            let Some(inst) = st.instances.get_mut(&id) else {
                continue;
            };
            let Phase::Parked { waiter, .. } = std::mem::replace(&mut inst.phase, Phase::Returned)
            else {
                continue;
            };
            if waiter.is_closed() {
                // Its `/next` connection is gone; it will poll again or exit.
                continue;
            }
            let assignment = self.begin(&mut st, id, pending);
            match waiter.send(assignment) {
                Ok(()) => return Ok(outcome),
                Err(assignment) => {
                    // `/next` went away just now: take the invocation back.
                    let Some(flight) = st.in_flight.remove(&assignment.request_id) else {
                        return Ok(outcome);
                    };
                    flight.timer.abort();
                    if let Some(inst) = st.instances.get_mut(&id) {
                        inst.phase = Phase::Returned;
                        inst.current = None;
                        inst.served = inst.served.saturating_sub(1);
                    }
                    pending = Pending {
                        request_id: assignment.request_id,
                        event: assignment.event,
                        trace_id: assignment.trace_id,
                        reply: flight.reply,
                    };
                }
            }
        }
        // While a failed start backs off, nothing can serve: fail fast. Once
        // the backoff is over, the request itself triggers the next attempt.
        let backing_off = st.retry_at.is_some_and(|at| at > Instant::now());
        if st.init_failing && backing_off && !st.has_warm() && st.starting() == 0 {
            return Err(Rejected::InitFailing);
        }
        if st.queue.len() >= self.queue_depth {
            return Err(Rejected::QueueFull);
        }
        st.queue.push_back(pending);
        self.reconcile(&mut st);
        Ok(outcome)
    }

    /// Marks an invocation as running on an instance and arms its timeout.
    fn begin(self: &Arc<Self>, st: &mut State, id: u64, pending: Pending) -> Assignment {
        let timeout = self.spec.timeout;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let deadline_ms = u64::try_from(now_ms + timeout.as_millis()).unwrap_or(u64::MAX);
        let timer = {
            let pool = Arc::clone(self);
            let request_id = pending.request_id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                pool.on_timeout(&request_id);
            })
            .abort_handle()
        };
        let mut cold = false;
        if let Some(inst) = st.instances.get_mut(&id) {
            cold = inst.served == 0;
            inst.served += 1;
            inst.phase = Phase::Busy;
            inst.current = Some(pending.request_id.clone());
        }
        st.in_flight.insert(
            pending.request_id.clone(),
            InFlight {
                instance: id,
                cold,
                reply: pending.reply,
                timer,
            },
        );
        Assignment {
            request_id: pending.request_id,
            event: pending.event,
            deadline_ms,
            trace_id: pending.trace_id,
        }
    }

    /// `GET /next` of an instance: the next invocation, when there is one.
    pub async fn next(self: &Arc<Self>, id: u64) -> Result<Assignment, RuntimeError> {
        let assignment = {
            let mut st = self.lock();
            let mut became_warm = None;
            let mut abandoned = None;
            {
                let Some(inst) = st.instances.get_mut(&id) else {
                    return Err(RuntimeError::UnknownInstance);
                };
                match &inst.phase {
                    Phase::Stopping => return Err(RuntimeError::Stopping),
                    Phase::Starting { since } => became_warm = Some(since.elapsed()),
                    Phase::Busy => abandoned = inst.current.take(),
                    Phase::Parked { .. } | Phase::Returned => {}
                }
                // A second `/next` replaces the first (whose waiter drops).
                inst.phase = Phase::Returned;
            }
            st.idle.retain(|&i| i != id);
            if let Some(init) = became_warm {
                st.init_failing = false;
                if st.count(Instance::is_warm) >= self.spec.min_warm {
                    st.started_up = true;
                }
                info!(
                    function = %self.spec.name,
                    instance = id,
                    init_ms = u64::try_from(init.as_millis()).unwrap_or(u64::MAX),
                    "instance ready"
                );
                self.changed.notify_waiters();
            }
            if let Some(request_id) = abandoned {
                // Asking for more without answering: the invocation failed.
                if let Some(flight) = st.in_flight.remove(&request_id) {
                    flight.timer.abort();
                    warn!(function = %self.spec.name, instance = id, %request_id,
                        "instance polled for the next event without answering the current one");
                    let _ = flight.reply.send(Outcome {
                        instance: Some(id),
                        cold: flight.cold,
                        result: InvokeResult::Crashed,
                    });
                }
            }
            let mut ready = None;
            while let Some(pending) = st.queue.pop_front() {
                if !pending.reply.is_closed() {
                    ready = Some(self.begin(&mut st, id, pending));
                    break;
                }
            }
            match ready {
                Some(assignment) => return Ok(assignment),
                None => {
                    let (waiter, assignment) = oneshot::channel();
                    if let Some(inst) = st.instances.get_mut(&id) {
                        inst.phase = Phase::Parked {
                            waiter,
                            since: Instant::now(),
                        };
                    }
                    st.idle.push(id);
                    assignment
                }
            }
        };
        // Long poll: answered only when an event is there (never 204); a
        // dropped waiter means the instance is being stopped.
        assignment.await.map_err(|_| RuntimeError::Stopping)
    }

    /// A posted response (`Ok`) or error (`Err`) for an invocation.
    pub fn complete(
        &self,
        id: u64,
        request_id: &str,
        result: Result<Bytes, Bytes>,
    ) -> Result<(), RuntimeError> {
        let mut st = self.lock();
        // Only the instance running it may answer an invocation.
        if st.in_flight.get(request_id).map(|f| f.instance) != Some(id) {
            return Err(RuntimeError::UnknownRequest);
        }
        let Some(flight) = st.in_flight.remove(request_id) else {
            return Err(RuntimeError::UnknownRequest);
        };
        flight.timer.abort();
        if let Some(inst) = st.instances.get_mut(&id) {
            inst.current = None;
            if matches!(inst.phase, Phase::Busy) {
                inst.phase = Phase::Returned;
            }
        }
        st.failures = 0;
        st.retry_at = None;
        let result = match result {
            Ok(body) => InvokeResult::Response(body),
            Err(_) => InvokeResult::FunctionError,
        };
        let _ = flight.reply.send(Outcome {
            instance: Some(id),
            cold: flight.cold,
            result,
        });
        Ok(())
    }

    /// `POST /runtime/init/error`: the instance failed to initialise.
    pub fn init_error(&self, id: u64) -> Result<(), RuntimeError> {
        let mut st = self.lock();
        let Some(inst) = st.instances.get_mut(&id) else {
            return Err(RuntimeError::UnknownInstance);
        };
        if !matches!(inst.phase, Phase::Starting { .. }) {
            return Err(RuntimeError::AlreadyInitialised);
        }
        inst.init_error = true;
        inst.phase = Phase::Stopping;
        inst.child.kill();
        Ok(())
    }

    fn on_timeout(self: &Arc<Self>, request_id: &str) {
        let mut st = self.lock();
        let Some(flight) = st.in_flight.remove(request_id) else {
            return;
        };
        warn!(
            function = %self.spec.name,
            instance = flight.instance,
            %request_id,
            timeout_ms = u64::try_from(self.spec.timeout.as_millis()).unwrap_or(u64::MAX),
            "invocation timed out; replacing the instance"
        );
        let _ = flight.reply.send(Outcome {
            instance: Some(flight.instance),
            cold: flight.cold,
            result: InvokeResult::Timeout,
        });
        if let Some(inst) = st.instances.get_mut(&flight.instance) {
            inst.current = None;
            inst.phase = Phase::Stopping;
            inst.child.kill();
        }
        let id = flight.instance;
        st.idle.retain(|&i| i != id);
        self.reconcile(&mut st);
    }

    /// Called by the supervisor once the instance's process is gone.
    fn on_exit(self: &Arc<Self>, id: u64, status: Option<ExitStatus>) {
        let mut st = self.lock();
        let Some(inst) = st.instances.remove(&id) else {
            return;
        };
        st.idle.retain(|&i| i != id);
        let status_text = status.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
        let name = &self.spec.name;
        let mut init_failed = false;
        match &inst.phase {
            Phase::Stopping if inst.init_error => {
                error!(function = %name, instance = id, status = %status_text,
                    "instance reported an initialization error");
                init_failed = true;
            }
            Phase::Stopping => {
                info!(function = %name, instance = id, status = %status_text, "instance stopped");
            }
            Phase::Starting { .. } => {
                error!(function = %name, instance = id, status = %status_text,
                    "instance exited before its first /next: initialization failed");
                init_failed = true;
            }
            Phase::Busy => {
                error!(function = %name, instance = id, status = %status_text,
                    "instance exited during an invocation");
            }
            Phase::Parked { .. } | Phase::Returned => {
                warn!(function = %name, instance = id, status = %status_text,
                    "instance exited between invocations");
            }
        }
        let unexpected = !matches!(inst.phase, Phase::Stopping) || init_failed;
        if let Some(request_id) = &inst.current
            && let Some(flight) = st.in_flight.remove(request_id)
        {
            flight.timer.abort();
            let _ = flight.reply.send(Outcome {
                instance: Some(id),
                cold: flight.cold,
                result: InvokeResult::Crashed,
            });
        }
        if unexpected && !st.stopping {
            st.failures = st.failures.saturating_add(1);
            let backoff = BACKOFF_START
                .saturating_mul(1 << st.failures.saturating_sub(1).min(16))
                .min(BACKOFF_MAX);
            st.retry_at = Some(Instant::now() + backoff);
        }
        if init_failed {
            st.init_failing = true;
            if !st.has_warm() {
                // Nobody can serve the queue: fail it now rather than let
                // clients wait on a function that does not start.
                st.fail_queued(|| InvokeResult::InitFailed);
            }
        }
        drop(inst);
        self.reconcile(&mut st);
        self.changed.notify_waiters();
    }

    /// Starts instances while below `min_warm` or while queued invocations
    /// outnumber starting instances, within `max_concurrency` and backoff.
    fn reconcile(self: &Arc<Self>, st: &mut State) {
        if st.stopping {
            return;
        }
        let live = st.live();
        let deficit = self.spec.min_warm.saturating_sub(live);
        let unserved = st.queue.len().saturating_sub(st.starting());
        let want = deficit
            .max(unserved)
            .min(self.spec.max_concurrency.saturating_sub(live));
        if want == 0 {
            return;
        }
        if let Some(at) = st.retry_at.filter(|at| *at > Instant::now()) {
            if !st.retry_scheduled {
                st.retry_scheduled = true;
                let pool = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    let mut st = pool.lock();
                    st.retry_scheduled = false;
                    pool.reconcile(&mut st);
                });
            }
            return;
        }
        for _ in 0..want {
            if !self.spawn_instance(st) {
                break;
            }
        }
    }

    fn spawn_instance(self: &Arc<Self>, st: &mut State) -> bool {
        st.next_id += 1;
        let id = st.next_id;
        let runtime_api = format!("http://{}/i/{}/{}", self.runtime_api.0, self.spec.name, id);
        let env = [
            ("AWS_LAMBDA_RUNTIME_API", runtime_api),
            ("AWS_LAMBDA_LOG_STREAM_NAME", format!("instance-{id}")),
        ];
        let pool = Arc::downgrade(self);
        let spawned = process::spawn(&self.launch, id, &env, &self.tracker, move |status| {
            if let Some(pool) = pool.upgrade() {
                pool.on_exit(id, status);
            }
        });
        match spawned {
            Ok(child) => {
                info!(function = %self.spec.name, instance = id, pid = child.pid, "instance starting");
                st.instances.insert(
                    id,
                    Instance {
                        phase: Phase::Starting {
                            since: Instant::now(),
                        },
                        current: None,
                        served: 0,
                        init_error: false,
                        child,
                    },
                );
                true
            }
            Err(err) => {
                error!(function = %self.spec.name, instance = id,
                    program = %self.launch.program.display(), error = %err,
                    "cannot start instance");
                st.failures = st.failures.saturating_add(1);
                st.retry_at = Some(Instant::now() + BACKOFF_MAX);
                st.init_failing = true;
                if !st.has_warm() {
                    st.fail_queued(|| InvokeResult::InitFailed);
                }
                self.changed.notify_waiters();
                false
            }
        }
    }

    /// Stops idle instances above the minimum; false once stopping.
    fn reap_idle(&self) -> bool {
        let mut st = self.lock();
        if st.stopping {
            return false;
        }
        let mut live = st.live();
        let mut idle: Vec<(Instant, u64)> = st
            .instances
            .iter()
            .filter_map(|(id, i)| match i.phase {
                Phase::Parked { since, .. } if since.elapsed() >= self.idle_timeout => {
                    Some((since, *id))
                }
                _ => None,
            })
            .collect();
        idle.sort();
        for (_, id) in idle {
            if live <= self.spec.min_warm {
                break;
            }
            if let Some(inst) = st.instances.get_mut(&id) {
                info!(function = %self.spec.name, instance = id, "stopping idle instance");
                inst.phase = Phase::Stopping;
                inst.child.terminate();
                live -= 1;
            }
            st.idle.retain(|&i| i != id);
        }
        true
    }

    /// Begins shutdown: no new instances or invocations; every instance gets
    /// SIGTERM (then SIGKILL after a grace).
    pub fn stop_all(&self) {
        let mut st = self.lock();
        st.stopping = true;
        st.fail_queued(|| InvokeResult::ShuttingDown);
        st.idle.clear();
        for inst in st.instances.values_mut() {
            inst.phase = Phase::Stopping;
            inst.child.terminate();
        }
    }

    /// SIGKILL to every instance left.
    pub fn kill_all(&self) {
        let st = self.lock();
        for inst in st.instances.values() {
            inst.child.kill();
        }
    }

    /// Processes not yet exited.
    pub fn processes(&self) -> usize {
        self.lock().instances.len()
    }

    /// Ready: once start-up brought `min_warm` instances up, while a warm
    /// instance remains (or none is required and none fails); never while
    /// stopping.
    pub fn is_ready(&self) -> bool {
        let st = self.lock();
        Self::ready(&st, self.spec.min_warm)
    }

    fn ready(st: &State, min_warm: usize) -> bool {
        !st.stopping
            && (st.started_up || min_warm == 0)
            && (st.has_warm() || (min_warm == 0 && !st.init_failing))
    }

    /// A snapshot for the health endpoint.
    pub fn status(&self) -> PoolStatus {
        let st = self.lock();
        PoolStatus {
            ready: Self::ready(&st, self.spec.min_warm),
            warm: st.count(Instance::is_warm),
            starting: st.starting(),
            busy: st.count(|i| matches!(i.phase, Phase::Busy)),
            queued: st.queue.len(),
            init_failing: st.init_failing,
        }
    }
}
