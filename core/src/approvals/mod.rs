//! Just-in-time approvals: a statement whose rule says `approve` waits for a
//! second person.
//!
//! [`Approvals`] is the gateway-wide service every shard and the admin API share.
//! It wraps an [`ApprovalStore`] (where requests live and where the rules of
//! segregation of duties are enforced) and reports every request and decision to
//! the audit log and to the `approvals.notify` webhooks. Webhooks are delivered
//! by their own thread, retried with back-off, and never block the data path; the
//! same thread expires requests nobody is waiting on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sluice_config::Config;

use crate::audit::{now_ms, Audit, Rec};
use crate::warn;

mod hold;
pub mod store;

pub use hold::{Hold, Opened, Pending, Refusal, Settled, Waiting};

pub use store::{
    ApprovalStore, Decision, Key, MemoryStore, NewRequest, OpenError, Request, State, VoteError,
    Voted, Voter,
};

/// The gateway's approval service.
pub struct Approvals {
    store: Arc<dyn ApprovalStore>,
    audit: Option<Arc<Audit>>,
    webhooks: Mutex<Arc<[String]>>,
    max_pending: AtomicUsize,
    outbox: flume::Sender<Delivery>,
}

/// One JSON document for every webhook URL.
struct Delivery {
    urls: Arc<[String]>,
    body: Arc<Vec<u8>>,
}

impl Approvals {
    /// Starts the service (and its webhook thread) for `config`.
    pub fn start(config: &Config, audit: Option<Arc<Audit>>) -> Arc<Approvals> {
        let (outbox, inbox) = flume::bounded(4096);
        let approvals = Arc::new(Approvals {
            store: Arc::new(MemoryStore::default()),
            audit,
            webhooks: Mutex::new(config.approvals.notify.clone().into()),
            max_pending: AtomicUsize::new(config.approvals.max_pending),
            outbox,
        });
        let weak = Arc::downgrade(&approvals);
        let spawned = std::thread::Builder::new()
            .name("sluice-approvals".into())
            .spawn(move || background(weak, inbox));
        if let Err(e) = spawned {
            warn!("approvals_thread_failed", error = e);
        }
        approvals
    }

    /// Takes a reloaded configuration's webhooks and limits.
    pub fn reconfigure(&self, config: &Config) {
        *self.webhooks.lock().unwrap_or_else(|p| p.into_inner()) =
            config.approvals.notify.clone().into();
        self.max_pending
            .store(config.approvals.max_pending, Ordering::Relaxed);
    }

    /// Opens a request for a held statement (or finds the requester's pending one
    /// when `new.reuse`).
    pub fn open(&self, new: NewRequest) -> Result<(Request, bool), OpenError> {
        let opened = self
            .store
            .open(new, now_ms(), self.max_pending.load(Ordering::Relaxed))?;
        if opened.1 {
            self.report("requested", &opened.0, &opened.0.requester, None);
        }
        Ok(opened)
    }

    /// An unused approval of exactly this statement by this requester, within
    /// its grant window; using it spends it.
    pub fn take_grant(&self, key: &Key) -> Option<Request> {
        let r = self.store.take_grant(key, now_ms())?;
        self.report("used", &r, &r.requester, None);
        Some(r)
    }

    /// The waiting session uses the approval it waited for.
    pub fn consume(&self, id: u64) -> Option<Request> {
        let r = self.store.consume(id, now_ms())?;
        self.report("used", &r, &r.requester, None);
        Some(r)
    }

    /// The requester's client went away while waiting.
    pub fn cancel(&self, id: u64) {
        if let Some(r) = self.store.cancel(id, now_ms()) {
            self.report("cancelled", &r, &r.requester, None);
        }
    }

    pub fn vote(
        &self,
        id: u64,
        voter: &Voter,
        decision: Decision,
        reason: Option<String>,
    ) -> Result<Voted, VoteError> {
        let voted = self
            .store
            .vote(id, voter, decision, reason.clone(), now_ms())?;
        let action = match (decision, voted.decided, voted.counted) {
            (Decision::Deny, ..) => Some("denied"),
            (Decision::Approve, true, _) => Some("approved"),
            (Decision::Approve, false, true) => Some("vote"),
            (Decision::Approve, false, false) => None,
        };
        if let Some(action) = action {
            self.report(action, &voted.request, &voter.subject, reason.as_deref());
        }
        if voted.decided {
            // Only now may the waiting session act on it (its "used" record
            // comes after the decision's).
            self.store.wake(id);
        }
        Ok(voted)
    }

    /// One request (expired on the spot if due; the expiry is reported by the
    /// background sweep within half a second).
    pub fn get(&self, id: u64) -> Option<Request> {
        self.store.get(id, now_ms())
    }

    pub fn list(&self, state: Option<State>) -> Vec<Request> {
        self.store.list(state, now_ms())
    }

    /// Wakes when request `id` changes state.
    pub fn watch(&self, id: u64) -> flume::Receiver<()> {
        self.store.watch(id)
    }

    /// Expires every pending request past its time, reporting each once.
    pub fn sweep(&self) {
        for r in self.store.expire(now_ms()) {
            self.report("expired", &r, "sluice", None);
        }
    }

    /// Writes the audit record and queues the webhook for one event.
    fn report(&self, action: &str, r: &Request, actor: &str, reason: Option<&str>) {
        if let Some(audit) = &self.audit {
            let mut body = Vec::with_capacity(512 + r.statement.len());
            let rec = Rec::begin(&mut body, "approval", now_ms())
                .str("action", action)
                .num("approval", r.id)
                .str("state", r.state.as_str())
                .str("target", &r.target)
                .str("requester", &r.requester)
                .str("subject", actor)
                .str("session", &r.session)
                .str("kinds", &r.summary)
                .text("text", r.statement.as_bytes())
                .str("sha256", &store::hex(&r.statement_sha256))
                .strs("params", r.params.iter())
                .str("database", &r.database)
                .strs("approvers", r.approvers.iter())
                .num("quorum", r.quorum as u64)
                .strs(
                    "approved_by",
                    r.approvals.iter().map(|v| v.subject.as_str()),
                );
            match reason {
                Some(reason) => rec.str("reason", reason).end(),
                None => rec.end(),
            }
            audit.side_record(body);
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
