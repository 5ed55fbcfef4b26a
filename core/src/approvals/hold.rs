//! The approval hold flow, one for every driver: a command that needs a second
//! person is [`Approvals::hold`]-ed, which spends an earlier approval of exactly
//! this command, or opens a request; in `wait` mode the session then waits on
//! it ([`Pending::wait`]) until it is decided, expires, or the client leaves.
//! The driver only says what is held and renders the outcome in its own
//! protocol (a SQLSTATE, an HTTP status).

use std::sync::Arc;
use std::time::Duration;

use sluice_config::policy::ApprovalSpec;
use sluice_config::ApprovalMode;

use super::{Approvals, Key, NewRequest, State, StoreError};

/// A command held for approval, as the driver describes it.
pub struct Hold {
    /// Who asks, where, and the hash binding the approval to the exact command.
    pub key: Key,
    pub spec: Arc<ApprovalSpec>,
    pub protocol: &'static str,
    /// What is held, as clients are told: `DELETE on orders`, `POST /x on api`.
    pub what: String,
    /// A short label for approvers' lists (`DELETE`, `POST`).
    pub summary: String,
    /// The command, for approvers to read.
    pub text: String,
    pub params: Vec<String>,
    pub database: String,
    pub session: String,
    /// The requester's reason, as the protocol carries it.
    pub justification: Option<String>,
    /// How a requester of this protocol gives a reason (for the refusal when
    /// a rule needs one).
    pub how_to_justify: &'static str,
}

/// What holding a command did.
pub enum Opened<'a> {
    /// An earlier approval of exactly this command, spent now: run it.
    Granted(u64),
    /// `wait` mode: request open; wait on it.
    Waiting(Pending<'a>),
    /// `nowait` mode: request open (or the requester's pending one found); the
    /// client is told to send the same command again once it is approved.
    Later {
        id: u64,
        approvers: Arc<[String]>,
        expires_at: u64,
        /// How long the approval can be used once granted.
        grant_ttl: Duration,
    },
    /// No request could be opened (too many pending, the store unreachable):
    /// refuse, with this message.
    Failed(String),
}

/// An open request a session waits on.
pub struct Pending<'a> {
    approvals: &'a Approvals,
    pub id: u64,
    pub what: String,
    pub timeout: Duration,
    /// When the wait gives up even if the store cannot be asked (its own
    /// expiry normally says so first); by this machine's monotonic clock.
    deadline: std::time::Instant,
}

/// How a wait ended.
pub enum Settled {
    /// Approved, and this wait used the approval: run the command.
    Approved(u64),
    /// Not approved: refuse, with [`Refusal::message`].
    Refused { id: u64, why: Refusal, what: String },
    /// The client hung up; the request was cancelled.
    Gone,
}

/// Why a held command will not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Denied {
        by: String,
        reason: Option<String>,
    },
    Expired {
        after: Duration,
    },
    /// Cancelled elsewhere, unknown, or already used.
    Closed(&'static str),
    /// The gateway is stopping; the request was cancelled.
    ShuttingDown,
    /// The client asked to cancel (a PostgreSQL `CancelRequest`).
    ClientCancelled,
}

impl Settled {
    /// The client-facing message of a refusal (empty otherwise).
    pub fn message(&self) -> String {
        let Settled::Refused { id, why, what } = self else {
            return String::new();
        };
        match why {
            Refusal::Denied { by, .. } => format!("approval {id} for {what} was denied by {by}"),
            Refusal::Expired { after } => format!(
                "approval {id} for {what} timed out after {}s without a decision",
                after.as_secs()
            ),
            Refusal::Closed(why) => format!("approval {id} for {what} was {why}"),
            Refusal::ShuttingDown => {
                format!("approval {id} for {what} was cancelled: the gateway is shutting down")
            }
            Refusal::ClientCancelled => format!("approval {id} for {what} was cancelled"),
        }
    }
}

impl Approvals {
    /// Holds a command: spends a grant of exactly it, or opens a request.
    /// Fails closed: a store that cannot be asked, or does not answer within
    /// [`CALL_TIMEOUT`] (`sleep` is the runtime's timer), refuses the command.
    pub async fn hold<S: std::future::Future<Output = ()>>(
        &self,
        hold: Hold,
        sleep: impl Fn(Duration) -> S,
    ) -> Opened<'_> {
        // An approval already granted runs whatever reason comes with it.
        match bounded(self.take_grant(&hold.key), sleep(CALL_TIMEOUT)).await {
            Ok(Some(r)) => return Opened::Granted(r.id),
            Ok(None) => {}
            Err(e) => return Opened::Failed(format!("{} needs approval, and {e}", hold.what)),
        }
        let justification = match justification(hold.justification.as_deref()) {
            Ok(j) => j,
            Err(e) => return Opened::Failed(format!("{} needs approval, and {e}", hold.what)),
        };
        if hold.spec.reason && justification.is_none() {
            return Opened::Failed(format!(
                "{} needs approval with a reason: {}",
                hold.what, hold.how_to_justify
            ));
        }
        let wait = hold.spec.mode == ApprovalMode::Wait;
        let spec = &hold.spec;
        let open = self.open(NewRequest {
            key: hold.key,
            protocol: hold.protocol,
            summary: hold.summary,
            text: hold.text,
            params: hold.params,
            database: hold.database,
            session: hold.session,
            justification,
            approvers: spec.approvers.clone(),
            quorum: spec.quorum,
            ttl_ms: spec.timeout.as_millis() as u64,
            grant_ttl_ms: spec.grant_ttl.as_millis() as u64,
            reuse: !wait,
        });
        let opened = bounded(open, sleep(CALL_TIMEOUT)).await;
        let what = hold.what;
        let request = match opened {
            Ok((r, _)) => r,
            Err(e) => {
                return Opened::Failed(format!(
                    "{what} needs approval, and no request could be opened: {e}"
                ))
            }
        };
        crate::info!(
            "approval_requested",
            approval = request.id,
            target = request.target,
            subject = request.requester,
            wait = wait
        );
        if !wait {
            return Opened::Later {
                id: request.id,
                approvers: request.approvers,
                expires_at: request.expires_at,
                grant_ttl: spec.grant_ttl,
            };
        }
        Opened::Waiting(Pending {
            approvals: self,
            id: request.id,
            what,
            timeout: spec.timeout,
            deadline: std::time::Instant::now() + spec.timeout + EXPIRY_GRACE,
        })
    }
}

/// What a waiting session watches besides the request, in whichever runtime
/// it runs (the monoio shards, the SSH endpoint's tokio runtime).
pub struct Waiting<Stop, Cancel, Sleep> {
    /// The gateway is stopping: give up (the request is cancelled).
    pub stopping: Stop,
    /// The client asked to cancel (a PostgreSQL `CancelRequest`).
    pub cancelled: Cancel,
    /// The runtime's timer.
    pub sleep: Sleep,
}

impl Pending<'_> {
    /// Waits (without holding the shard) for the request to be decided, while
    /// the client on `client_fd` stays connected and `waiting` says go on.
    pub async fn wait<S: std::future::Future<Output = ()>>(
        self,
        client_fd: std::os::fd::RawFd,
        waiting: Waiting<impl Fn() -> bool, impl Fn() -> bool, impl Fn(Duration) -> S>,
    ) -> Settled {
        let id = self.id;
        let why = match self
            .approvals
            .wait(id, self.deadline, client_fd, &waiting)
            .await
        {
            Waited::Approved => return Settled::Approved(id),
            Waited::ClientGone => return Settled::Gone,
            Waited::Denied { by, reason } => Refusal::Denied { by, reason },
            Waited::Expired => Refusal::Expired {
                after: self.timeout,
            },
            Waited::Closed(why) => Refusal::Closed(why),
            Waited::ShuttingDown => Refusal::ShuttingDown,
            Waited::ClientCancelled => Refusal::ClientCancelled,
        };
        Settled::Refused {
            id,
            why,
            what: self.what,
        }
    }
}

/// How waiting for a decision ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Waited {
    /// Approved, and this wait used the approval.
    Approved,
    Denied {
        by: String,
        reason: Option<String>,
    },
    Expired,
    /// Cancelled elsewhere, unknown, or already used.
    Closed(&'static str),
    /// The client hung up; the request was cancelled.
    ClientGone,
    /// The client asked to cancel; the request was cancelled.
    ClientCancelled,
    /// The gateway is stopping; the request was cancelled.
    ShuttingDown,
}

/// Longest reason a requester may give, in bytes.
pub const MAX_JUSTIFICATION: usize = 1024;

/// A requester's reason as recorded: trimmed, `None` when empty; refused when
/// longer than [`MAX_JUSTIFICATION`] or holding control characters.
pub fn justification(given: Option<&str>) -> Result<Option<String>, String> {
    let Some(text) = given.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.len() > MAX_JUSTIFICATION {
        return Err(format!(
            "its reason is longer than {MAX_JUSTIFICATION} bytes"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("its reason holds control characters".into());
    }
    Ok(Some(text.to_owned()))
}

/// The longest a session waits for one answer of the store.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `call`, or a store error if `timer` runs out first: a store that stops
/// answering refuses, it never hangs the session.
async fn bounded<T, E: From<StoreError>>(
    call: impl std::future::Future<Output = Result<T, E>>,
    timer: impl std::future::Future<Output = ()>,
) -> Result<T, E> {
    match crate::notify::race(call, timer).await {
        crate::notify::Either::Left(r) => r,
        crate::notify::Either::Right(()) => Err(StoreError("no answer in time".into()).into()),
    }
}

/// How often a waiting session checks on its client ...
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// ... and asks the store, besides when it is woken.
const ASK_EVERY: Duration = Duration::from_secs(1);
/// How long past its expiry a wait goes on when the store cannot be asked
/// (the store's own sweep normally says so first).
const EXPIRY_GRACE: Duration = Duration::from_secs(2);

impl Approvals {
    /// Waits (without holding the shard) for request `id` to be decided, while
    /// the client on `client_fd` stays connected and `cancelled()` stays false.
    /// A wait that ends without using the approval cancels the request, also
    /// when this future is dropped. While the store cannot be asked the wait
    /// goes on (until the request's expiry), and resumes when it answers.
    async fn wait<S: std::future::Future<Output = ()>>(
        &self,
        id: u64,
        deadline: std::time::Instant,
        client_fd: std::os::fd::RawFd,
        waiting: &Waiting<impl Fn() -> bool, impl Fn() -> bool, impl Fn(Duration) -> S>,
    ) -> Waited {
        struct CancelOnDrop<'a> {
            approvals: &'a Approvals,
            id: u64,
            armed: bool,
        }
        impl Drop for CancelOnDrop<'_> {
            fn drop(&mut self) {
                if self.armed {
                    self.approvals.cancel_soon(self.id);
                }
            }
        }
        let mut guard = CancelOnDrop {
            approvals: self,
            id,
            armed: true,
        };
        let mut ask = true;
        let mut asked = std::time::Instant::now();
        // Replaced by a registered watch on the first ask.
        let mut changed = flume::bounded(1).1;
        let outcome = loop {
            if ask {
                // Watch before asking: a decision after the answer still wakes us.
                changed = self.watch(id);
                asked = std::time::Instant::now();
                let left = deadline
                    .saturating_duration_since(std::time::Instant::now())
                    .min(CALL_TIMEOUT);
                match bounded(self.get(id), (waiting.sleep)(left)).await {
                    Err(e) => crate::debug!("approval_wait_store", approval = id, error = e),
                    Ok(None) => break Waited::Closed("no longer known"),
                    Ok(Some(r)) => match r.state {
                        State::Pending => {}
                        State::Approved => {
                            match bounded(self.consume(id), (waiting.sleep)(CALL_TIMEOUT)).await {
                                Ok(Some(_)) => break Waited::Approved,
                                Ok(None) => {
                                    break Waited::Closed(
                                        "already used, or its grant window passed",
                                    )
                                }
                                // Approved but not yet usable here: ask again.
                                Err(e) => {
                                    crate::debug!("approval_wait_store", approval = id, error = e)
                                }
                            }
                        }
                        State::Denied => {
                            break Waited::Denied {
                                by: r.denied_by.unwrap_or_else(|| "an approver".into()),
                                reason: r.reason,
                            }
                        }
                        State::Expired => break Waited::Expired,
                        State::Cancelled => break Waited::Closed("cancelled"),
                        State::Abandoned => break Waited::Closed("abandoned"),
                    },
                }
            }
            if std::time::Instant::now() >= deadline {
                self.cancel(id).await;
                break Waited::Expired;
            }
            if (waiting.stopping)() {
                self.cancel(id).await;
                break Waited::ShuttingDown;
            }
            let woken = crate::notify::race(changed.recv_async(), (waiting.sleep)(CHECK_EVERY));
            ask = match woken.await {
                crate::notify::Either::Left(_) => true,
                // A shared store wakes its waiters itself (notifications, and
                // a poll under them); the in-memory one is asked now and then.
                crate::notify::Either::Right(()) => {
                    !self.wakes_reliably() && asked.elapsed() >= ASK_EVERY
                }
            };
            if super::hung_up(client_fd) {
                self.cancel(id).await;
                crate::info!(
                    "approval_cancelled",
                    approval = id,
                    reason = "client disconnected"
                );
                break Waited::ClientGone;
            }
            if (waiting.cancelled)() {
                self.cancel(id).await;
                crate::info!(
                    "approval_cancelled",
                    approval = id,
                    reason = "client cancel request"
                );
                break Waited::ClientCancelled;
            }
        };
        guard.armed = false;
        outcome
    }
}
