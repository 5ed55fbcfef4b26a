//! Just-in-time approvals: a statement whose rule says `approve` waits for a
//! second person.
//!
//! [`Approvals`] is the gateway-wide service every shard and the admin API share.
//! It wraps an [`ApprovalStore`] (where requests live and where the rules of
//! segregation of duties are enforced) and reports every request and decision to
//! the audit log and to the `approvals.notify` webhooks. Webhooks are delivered
//! by their own thread, retried with back-off, and never block the data path; the
//! same thread expires requests nobody is waiting on.
//!
//! With `[state]`, the store is PostgreSQL, shared by every instance; its calls
//! block on the network, so they run on worker threads of this service and the
//! shards await their answers: only a held statement ever waits on the store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sluice_config::Config;

use crate::audit::{now_ms, Audit, Event as _};
use crate::warn;

mod hold;
pub mod postgres;
pub mod store;

pub use hold::{Hold, Opened, Pending, Refusal, Settled, Waiting, CALL_TIMEOUT, MAX_JUSTIFICATION};

pub use store::{
    ApprovalStore, Decision, Key, MemoryStore, NewRequest, OpenError, Request, State, StoreError,
    VoteError, Voted, Voter,
};

/// A store call run on a worker thread.
type Job = Box<dyn FnOnce() + Send>;

/// Worker threads for a remote store's calls (each holds one connection at a
/// time), and how many calls may wait for them.
const WORKERS: usize = 4;
const QUEUED_CALLS: usize = 4096;

/// The gateway's approval service.
pub struct Approvals {
    store: Arc<dyn ApprovalStore>,
    /// The shared store, when there is one.
    shared: Option<Arc<postgres::PgStore>>,
    /// Where a remote store's calls go (None: calls run in place).
    workers: Option<flume::Sender<Job>>,
    reporter: Arc<Reporter>,
    max_pending: AtomicUsize,
}

/// Tells the audit log and the webhooks of each event. Shared with the jobs
/// that change the store, so a change and its record happen together even
/// when the session that asked is gone by then.
struct Reporter {
    audit: Option<Arc<Audit>>,
    webhooks: Mutex<Arc<[String]>>,
    outbox: flume::Sender<Delivery>,
}

/// One JSON document for every webhook URL.
struct Delivery {
    urls: Arc<[String]>,
    body: Arc<Vec<u8>>,
}

impl Approvals {
    /// Starts the service (and its webhook thread) for `config`: in memory,
    /// or on the `[state]` database shared with other instances.
    pub fn start(config: &Config, audit: Option<Arc<Audit>>) -> Result<Arc<Approvals>, String> {
        let (outbox, inbox) = flume::bounded(4096);
        let (store, shared, workers): (Arc<dyn ApprovalStore>, _, _) = match &config.state {
            None => (Arc::new(MemoryStore::default()), None, None),
            Some(state) => {
                let pg = postgres::PgStore::start(state)?;
                if state.tls != sluice_config::UpstreamTls::Verify {
                    warn!(
                        "state_store_unverified",
                        detail = "[state] tls is not \"verify\": whoever can answer for the store on the network can approve held statements"
                    );
                }
                let (tx, rx) = flume::bounded::<Job>(QUEUED_CALLS);
                for i in 0..WORKERS {
                    let rx = rx.clone();
                    std::thread::Builder::new()
                        .name(format!("sluice-state-{i}"))
                        .spawn(move || {
                            for job in rx.iter() {
                                // A bug in one call must not take a worker away.
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                        })
                        .map_err(|e| format!("state worker thread: {e}"))?;
                }
                crate::info!("state_store", instance = pg.instance);
                (pg.clone() as Arc<dyn ApprovalStore>, Some(pg), Some(tx))
            }
        };
        if let (Some(pg), Some(audit)) = (&shared, &audit) {
            // Each durable checkpoint is kept in the store too, by the store's
            // own thread (a store that is down delays an anchor, never the log).
            let pg = Arc::downgrade(pg);
            audit.on_checkpoint(Box::new(move |c: &crate::audit::Checkpoint| {
                if let Some(pg) = pg.upgrade() {
                    pg.anchor(c.clone());
                }
            }));
        }
        let approvals = Arc::new(Approvals {
            store,
            shared,
            workers,
            reporter: Arc::new(Reporter {
                audit,
                webhooks: Mutex::new(config.approvals.notify.clone().into()),
                outbox,
            }),
            max_pending: AtomicUsize::new(config.approvals.max_pending),
        });
        let weak = Arc::downgrade(&approvals);
        let spawned = std::thread::Builder::new()
            .name("sluice-approvals".into())
            .spawn(move || background(weak, inbox));
        if let Err(e) = spawned {
            warn!("approvals_thread_failed", error = e);
        }
        Ok(approvals)
    }

    /// Takes a reloaded configuration's webhooks and limits.
    pub fn reconfigure(&self, config: &Config) {
        *self
            .reporter
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = config.approvals.notify.clone().into();
        self.max_pending
            .store(config.approvals.max_pending, Ordering::Relaxed);
    }

    /// Why the shared store is degraded, if it is.
    pub fn health(&self) -> Option<String> {
        self.store.health()
    }

    /// Failed store calls so far (None without a shared store).
    pub fn store_errors(&self) -> Option<u64> {
        self.shared.as_ref().map(|_| self.store.errors())
    }

    /// Runs `f` on the store with the reporter: in place for the in-memory
    /// store, on a worker thread for a remote one (the caller's runtime is
    /// free meanwhile). The job runs to its end even if the caller is gone
    /// by then (its records with it); a job nobody waits for any more when
    /// its turn comes is skipped.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn ApprovalStore, &Reporter) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(workers) = &self.workers else {
            return Ok(f(&*self.store, &self.reporter));
        };
        let (store, reporter) = (self.store.clone(), self.reporter.clone());
        let (tx, rx) = flume::bounded(1);
        let job: Job = Box::new(move || {
            if !tx.is_disconnected() {
                let _ = tx.send(f(&*store, &reporter));
            }
        });
        workers
            .try_send(job)
            .map_err(|_| StoreError("too many calls are waiting for the store".into()))?;
        rx.recv_async()
            .await
            .map_err(|_| StoreError("the call to the store failed".into()))
    }

    /// Opens a request for a held statement (or finds the requester's pending one
    /// when `new.reuse`).
    pub async fn open(&self, new: NewRequest) -> Result<(Request, bool), OpenError> {
        let max = self.max_pending.load(Ordering::Relaxed);
        self.call(move |s, rep| {
            let opened = s.open(new, now_ms(), max)?;
            if opened.1 {
                rep.report("requested", &opened.0, &opened.0.requester, None);
            }
            Ok(opened)
        })
        .await
        .unwrap_or_else(|e| Err(e.into()))
    }

    /// An unused approval of exactly this statement by this requester, within
    /// its grant window; using it spends it.
    pub async fn take_grant(&self, key: &Key) -> Result<Option<Request>, StoreError> {
        let key = key.clone();
        self.call(move |s, rep| {
            let r = s.take_grant(&key, now_ms())?;
            if let Some(r) = &r {
                rep.report("used", r, &r.requester, None);
            }
            Ok(r)
        })
        .await?
    }

    /// The waiting session uses the approval it waited for.
    pub async fn consume(&self, id: u64) -> Result<Option<Request>, StoreError> {
        self.call(move |s, rep| {
            let r = s.consume(id, now_ms())?;
            if let Some(r) = &r {
                rep.report("used", r, &r.requester, None);
            }
            Ok(r)
        })
        .await?
    }

    /// The requester's client went away while waiting.
    pub async fn cancel(&self, id: u64) {
        let cancelled = self
            .call(move |s, rep| cancel(s, rep, id))
            .await
            .and_then(|r| r);
        if let Err(e) = cancelled {
            warn!("approval_cancel_failed", approval = id, error = e.0);
        }
    }

    /// Cancels without waiting for the answer (a wait dropped mid-way).
    fn cancel_soon(&self, id: u64) {
        let Some(workers) = &self.workers else {
            let _ = cancel(&*self.store, &self.reporter, id);
            return;
        };
        let (store, reporter) = (self.store.clone(), self.reporter.clone());
        let _ = workers.try_send(Box::new(move || {
            let _ = cancel(&*store, &reporter, id);
        }));
    }

    pub async fn vote(
        &self,
        id: u64,
        voter: &Voter,
        decision: Decision,
        reason: Option<String>,
    ) -> Result<Voted, VoteError> {
        let voter = voter.clone();
        self.call(move |s, rep| {
            let voted = s.vote(id, &voter, decision, reason.clone(), now_ms())?;
            let action = match (decision, voted.decided, voted.counted) {
                (Decision::Deny, ..) => Some("denied"),
                (Decision::Approve, true, _) => Some("approved"),
                (Decision::Approve, false, true) => Some("vote"),
                (Decision::Approve, false, false) => None,
            };
            if let Some(action) = action {
                rep.report(action, &voted.request, &voter.subject, reason.as_deref());
            }
            if voted.decided {
                // Only now may the waiting session act on it (its "used"
                // record comes after the decision's).
                s.wake(id);
            }
            Ok(voted)
        })
        .await
        .unwrap_or_else(|e| Err(e.into()))
    }

    /// One request (expired on the spot if due; the expiry is reported by the
    /// background sweep within half a second).
    pub async fn get(&self, id: u64) -> Result<Option<Request>, StoreError> {
        self.call(move |s, _| s.get(id, now_ms())).await?
    }

    pub async fn list(&self, state: Option<State>) -> Result<Vec<Request>, StoreError> {
        self.call(move |s, _| s.list(state, now_ms())).await?
    }

    /// Wakes when request `id` may have changed state.
    pub fn watch(&self, id: u64) -> flume::Receiver<()> {
        self.store.watch(id)
    }

    /// Whether the store itself wakes waiters of every change (polling the
    /// requests they wait on), so they need not ask on their own.
    fn wakes_reliably(&self) -> bool {
        self.store.remote()
    }

    /// Closes every pending request past its time (or whose instance died),
    /// reporting each once. Runs on the background thread.
    pub fn sweep(&self) {
        match self.store.expire(now_ms()) {
            Ok(closed) => {
                for r in closed {
                    self.reporter.report(r.state.as_str(), &r, "sluice", None);
                }
            }
            Err(e) => crate::debug!("approval_sweep_failed", error = e.0),
        }
    }
}

/// Cancels a pending request, reporting it.
fn cancel(s: &dyn ApprovalStore, rep: &Reporter, id: u64) -> Result<(), StoreError> {
    if let Some(r) = s.cancel(id, now_ms())? {
        rep.report("cancelled", &r, &r.requester, None);
    }
    Ok(())
}

impl Reporter {
    /// Writes the audit record and queues the webhook for one event.
    fn report(&self, action: &str, r: &Request, actor: &str, reason: Option<&str>) {
        if let Some(audit) = &self.audit {
            audit.side_record(approval_record(action, r, actor, reason));
        }
        let urls = self
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if urls.is_empty() {
            return;
        }
        let body = serde_json::json!({
            "event": format!("approval.{action}"),
            "actor": actor,
            "reason": reason,
            "at": now_ms(),
            "request": r,
        });
        let delivery = Delivery {
            urls,
            body: Arc::new(body.to_string().into_bytes()),
        };
        if self.outbox.try_send(delivery).is_err() {
            warn!(
                "approval_webhook_dropped",
                approval = r.id,
                reason = "the webhook queue is full"
            );
        }
    }
}

/// The audit record of one approval event.
fn approval_record(action: &str, r: &Request, actor: &str, reason: Option<&str>) -> Vec<u8> {
    let mut body = Vec::with_capacity(512 + r.statement.len());
    let approved_by: Vec<&str> = r.approvals.iter().map(|v| v.subject.as_str()).collect();
    crate::audit::event::Approval {
        action,
        id: r.id,
        state: r.state.as_str(),
        target: &r.target,
        requester: &r.requester,
        subject: actor,
        session: &r.session,
        summary: &r.summary,
        text: r.statement.as_bytes(),
        sha256: &store::hex(&r.statement_sha256),
        params: &r.params,
        database: &r.database,
        approvers: &r.approvers,
        quorum: r.quorum as u64,
        approved_by: &approved_by,
        justification: r.justification.as_deref(),
        instance: Some(r.instance.as_str()).filter(|i| !i.is_empty()),
        reason,
    }
    .encode(&mut body);
    body
}

/// The hash an approval is bound to: tagged, length-prefixed `fields` (what
/// exactly would run) and the rule's approvers and quorum (a reload that
/// changes them invalidates earlier approvals).
pub fn key_hash(fields: &[(&[u8], &[u8])], spec: &sluice_config::policy::ApprovalSpec) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut field = |tag: &[u8], v: &[u8]| {
        h.update(tag);
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    };
    for (tag, v) in fields {
        field(tag, v);
    }
    for a in spec.approvers.iter() {
        field(b"approver", a.as_bytes());
    }
    field(b"quorum", &[spec.quorum]);
    h.finalize().into()
}

/// Has the peer closed its side (or reset) the connection? A waiting client
/// sends nothing, so a hang-up shows as `POLLRDHUP`/`POLLHUP` without reading.
pub fn hung_up(fd: std::os::fd::RawFd) -> bool {
    // POLLNVAL: the descriptor is already closed (the connection is gone).
    crate::net::poll_now(fd, libc::POLLRDHUP)
        & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL)
        != 0
}

/// Attempts per webhook delivery before it is given up (logged).
const ATTEMPTS: u32 = 6;
const FIRST_RETRY: Duration = Duration::from_millis(250);
const SWEEP_EVERY: Duration = Duration::from_millis(500);

struct Attempt {
    /// Deliveries go out in the order they were queued (retries permitting).
    seq: u64,
    due: Instant,
    tries: u32,
    url: String,
    body: Arc<Vec<u8>>,
}

/// The webhook sender and expiry sweeper.
fn background(approvals: Weak<Approvals>, inbox: flume::Receiver<Delivery>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(true)
        .build()
        .into();
    let mut queue: Vec<Attempt> = Vec::new();
    let mut last_sweep = Instant::now();
    let mut open = true;
    let mut seq = 0u64;
    while open || !queue.is_empty() {
        let now = Instant::now();
        let next = queue
            .iter()
            .map(|a| a.due)
            .min()
            .unwrap_or(now + SWEEP_EVERY)
            .min(last_sweep + SWEEP_EVERY);
        if open {
            match inbox.recv_timeout(next.saturating_duration_since(now)) {
                Ok(d) => queue.extend(d.urls.iter().map(|url| {
                    seq += 1;
                    Attempt {
                        seq,
                        due: Instant::now(),
                        tries: 0,
                        url: url.clone(),
                        body: d.body.clone(),
                    }
                })),
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => {
                    // Shutting down: one last try for what is queued.
                    open = false;
                    for a in &mut queue {
                        a.due = Instant::now();
                        a.tries = ATTEMPTS - 1;
                    }
                }
            }
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            if let Some(a) = approvals.upgrade() {
                a.sweep();
            }
        }
        let now = Instant::now();
        while let Some(i) = queue
            .iter()
            .enumerate()
            .filter(|(_, a)| a.due <= now)
            .min_by_key(|(_, a)| a.seq)
            .map(|(i, _)| i)
        {
            let mut a = queue.remove(i);
            let sent = agent
                .post(&a.url)
                .header("content-type", "application/json")
                .send(&a.body[..]);
            match sent {
                Ok(_) => {}
                Err(e) if a.tries + 1 < ATTEMPTS => {
                    a.tries += 1;
                    a.due = Instant::now() + FIRST_RETRY * 2u32.pow(a.tries - 1);
                    crate::debug!("approval_webhook_retry", url = a.url, error = e);
                    queue.push(a);
                }
                Err(e) => warn!(
                    "approval_webhook_failed",
                    url = a.url,
                    attempts = ATTEMPTS,
                    error = e
                ),
            }
        }
    }
}
