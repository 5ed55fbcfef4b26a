//! Where approval requests live. [`ApprovalStore`] is the seam: [`MemoryStore`]
//! keeps them in this process, shared by every shard (requests are rare next to
//! statements, so one mutex is not on any hot path); the PostgreSQL store
//! ([`super::postgres`]) shares them between gateway instances.
//!
//! The rules of segregation of duties are enforced here, in one place, whatever
//! surface the vote comes from (admin API, CLI, web page):
//! - the requester can never approve (or deny) their own request;
//! - an approver must be in one of the request's approver groups;
//! - the quorum counts distinct subjects: a second vote by the same person
//!   counts once;
//! - one deny is final;
//! - an expired request cannot be approved;
//! - an approval runs the statement once: either the waiting session uses it,
//!   or the requester's re-run within the grant window does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// What a request is bound to: only this requester, running this exact
/// statement (and parameters) on this target, can use its approval.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub requester: String,
    pub target: String,
    /// SHA-256 of the statement text and, for extended protocol, its bound
    /// parameters (or of an HTTP request's method, path and body).
    pub hash: [u8; 32],
}

/// A new request, as the data path describes it.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub key: Key,
    pub protocol: &'static str,
    /// What the statement does, e.g. `DELETE`.
    pub summary: String,
    /// The statement (cut for display; the hash covers all of it).
    pub text: String,
    /// Bound parameter values as shown to approvers (extended protocol).
    pub params: Vec<String>,
    /// The database the statement would run in.
    pub database: String,
    pub session: String,
    /// Why the requester needs it, in their own words.
    pub justification: Option<String>,
    pub approvers: Arc<[String]>,
    pub quorum: u8,
    pub ttl_ms: u64,
    pub grant_ttl_ms: u64,
    /// Reuse the requester's pending request for the same statement instead of
    /// opening a second one (no-wait mode re-runs).
    pub reuse: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
    /// The instance holding it stopped renewing its lease (it died).
    Abandoned,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
            State::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        [
            State::Pending,
            State::Approved,
            State::Denied,
            State::Expired,
            State::Cancelled,
            State::Abandoned,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Vote {
    pub subject: String,
    pub at: u64,
}

/// A request as approvers and the API see it.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub id: u64,
    pub state: State,
    /// The gateway instance holding the statement (shared stores only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance: String,
    pub requester: String,
    pub target: String,
    pub protocol: &'static str,
    pub summary: String,
    pub statement: String,
    #[serde(serialize_with = "hex32")]
    pub statement_sha256: [u8; 32],
    pub params: Vec<String>,
    pub database: String,
    pub session: String,
    /// Why the requester needs it, in their own words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    #[serde(serialize_with = "names")]
    pub approvers: Arc<[String]>,
    pub quorum: u8,
    pub approvals: Vec<Vote>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    pub expires_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
    /// Until when the approval can be used (approved requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_until: Option<u64>,
    /// The approval has run its statement.
    pub used: bool,
    #[serde(skip)]
    pub key: Option<Key>,
    #[serde(skip)]
    pub(super) grant_ttl_ms: u64,
}

fn names<S: serde::Serializer>(v: &Arc<[String]>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter())
}

fn hex32<S: serde::Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(h))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Who casts a vote: the subject and groups from their own verified token.
#[derive(Debug, Clone)]
pub struct Voter {
    pub subject: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    #[error("no approval request {0}")]
    NotFound(u64),
    #[error("`{0}` requested this and cannot decide on their own request")]
    OwnRequest(String),
    #[error("`{subject}` is not in an approver group of this request ({groups})")]
    NotApprover { subject: String, groups: String },
    #[error("request {id} is {state} and can no longer be decided")]
    Closed { id: u64, state: &'static str },
    /// (The detail is for the gateway's log, not for callers.)
    #[error("the approval store is unreachable")]
    Store(String),
}

/// The shared store could not be reached (or refused the call); the detail
/// is for the gateway's log, not for callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the approval store is unreachable")]
pub struct StoreError(pub String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("too many approval requests are open ({0}); try again later")]
    TooMany(usize),
    #[error("`{0}` already has {1} approval requests open")]
    TooManyFor(String, usize),
    /// (The detail is for the gateway's log, not for callers.)
    #[error("the approval store is unreachable")]
    Store(String),
}

/// Most requests one requester may have open at once (so one caller cannot
/// take every slot of `max_pending`).
pub const MAX_PENDING_PER_REQUESTER: usize = 256;

/// Whether `voter` may vote on `r` now: the segregation-of-duties rules,
/// the same for every store. Checked first: no group membership, admin role
/// or state makes a requester their own approver.
pub(super) fn may_vote(r: &Request, voter: &Voter) -> Result<(), VoteError> {
    if voter.subject == r.requester {
        return Err(VoteError::OwnRequest(voter.subject.clone()));
    }
    if !voter.groups.iter().any(|g| r.approvers.contains(g)) {
        return Err(VoteError::NotApprover {
            subject: voter.subject.clone(),
            groups: r.approvers.join(", "),
        });
    }
    if r.state != State::Pending {
        return Err(VoteError::Closed {
            id: r.id,
            state: r.state.as_str(),
        });
    }
    Ok(())
}

impl From<StoreError> for OpenError {
    fn from(e: StoreError) -> Self {
        OpenError::Store(e.0)
    }
}

impl From<StoreError> for VoteError {
    fn from(e: StoreError) -> Self {
        VoteError::Store(e.0)
    }
}

/// What a vote did.
#[derive(Debug, Clone)]
pub struct Voted {
    pub request: Request,
    /// False when this subject had already approved (the vote counts once).
    pub counted: bool,
    /// The vote decided the request (approved or denied).
    pub decided: bool,
}

/// Approval state shared by every shard (and, with a shared store, every
/// instance).
pub trait ApprovalStore: Send + Sync {
    /// Opens a request (or returns the requester's pending one for the same
    /// statement when `new.reuse`); the flag says whether it is new.
    fn open(
        &self,
        new: NewRequest,
        now: u64,
        max_pending: usize,
    ) -> Result<(Request, bool), OpenError>;
    fn get(&self, id: u64, now: u64) -> Result<Option<Request>, StoreError>;
    /// Requests, newest first, optionally in one state.
    fn list(&self, state: Option<State>, now: u64) -> Result<Vec<Request>, StoreError>;
    fn vote(
        &self,
        id: u64,
        voter: &Voter,
        decision: Decision,
        reason: Option<String>,
        now: u64,
    ) -> Result<Voted, VoteError>;
    /// Cancels a pending request (its waiting client went away).
    fn cancel(&self, id: u64, now: u64) -> Result<Option<Request>, StoreError>;
    /// Uses an approved request's approval for the session that waited for it.
    fn consume(&self, id: u64, now: u64) -> Result<Option<Request>, StoreError>;
    /// Uses an unused approval for this exact key within its grant window.
    fn take_grant(&self, key: &Key, now: u64) -> Result<Option<Request>, StoreError>;
    /// Closes pending requests past their expiry (and, in a shared store,
    /// those of dead instances); returns each once, to whichever caller
    /// closed it.
    fn expire(&self, now: u64) -> Result<Vec<Request>, StoreError>;
    /// A channel that receives a message when request `id` may have changed
    /// state (the receiver checks).
    fn watch(&self, id: u64) -> flume::Receiver<()>;
    /// Wakes the watchers of a request a vote decided.
    fn wake(&self, id: u64);
    /// Why the store is degraded, if it is.
    fn health(&self) -> Option<String> {
        None
    }
    /// Calls block on the network: run them off the shards.
    fn remote(&self) -> bool {
        false
    }
    /// Failed calls (and lost connections) so far.
    fn errors(&self) -> u64 {
        0
    }
}

struct Entry {
    request: Request,
    watchers: Vec<flume::Sender<()>>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    requests: HashMap<u64, Entry>,
    /// Decided requests in decision order, for pruning history.
    closed: VecDeque<u64>,
    pending: usize,
    /// Requests that expired on a read and have not been returned by
    /// [`ApprovalStore::expire`] yet (so each expiry is reported once, even if
    /// history pruning drops the request first).
    unreported: Vec<Request>,
}

/// Requests kept in memory after they close (they are in the audit log too).
const HISTORY: usize = 10_000;

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl Inner {
    /// Closes a pending request; `wake` tells its watchers now (a vote wakes
    /// them only once the decision has been reported, so records stay in order).
    fn close(&mut self, id: u64, state: State, now: u64, wake: bool) {
        let Some(e) = self.requests.get_mut(&id) else {
            return;
        };
        if e.request.state != State::Pending {
            return;
        }
        e.request.state = state;
        e.request.decided_at = Some(now);
        if state == State::Approved {
            e.request.grant_until = Some(now + e.request.grant_ttl_ms);
        }
        if wake {
            for w in e.watchers.drain(..) {
                let _ = w.try_send(());
            }
        }
        self.pending -= 1;
        self.closed.push_back(id);
        while self.closed.len() > HISTORY {
            if let Some(old) = self.closed.pop_front() {
                self.requests.remove(&old);
            }
        }
    }

    /// Expires `id` if it is pending and past its time.
    fn check_expiry(&mut self, id: u64, now: u64) -> bool {
        let due = self
            .requests
            .get(&id)
            .is_some_and(|e| e.request.state == State::Pending && now >= e.request.expires_at);
        if due {
            self.close(id, State::Expired, now, true);
            if let Some(e) = self.requests.get(&id) {
                self.unreported.push(e.request.clone());
            }
        }
        due
    }
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is
        // a few field writes); keep serving rather than poisoning approvals.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ApprovalStore for MemoryStore {
    fn open(
        &self,
        new: NewRequest,
        now: u64,
        max_pending: usize,
    ) -> Result<(Request, bool), OpenError> {
        let mut inner = self.lock();
        if new.reuse {
            let existing = inner
                .requests
                .values()
                .filter(|e| {
                    e.request.state == State::Pending
                        && now < e.request.expires_at
                        && e.request.key.as_ref() == Some(&new.key)
                })
                .map(|e| e.request.id)
                .max();
            if let Some(id) = existing {
                return Ok((inner.requests[&id].request.clone(), false));
            }
        }
        if inner.pending >= max_pending {
            return Err(OpenError::TooMany(inner.pending));
        }
        let mine = inner
            .requests
            .values()
            .filter(|e| {
                e.request.state == State::Pending && e.request.requester == new.key.requester
            })
            .count();
        if mine >= MAX_PENDING_PER_REQUESTER {
            return Err(OpenError::TooManyFor(new.key.requester.clone(), mine));
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let request = Request {
            id,
            state: State::Pending,
            instance: String::new(),
            requester: new.key.requester.clone(),
            target: new.key.target.clone(),
            protocol: new.protocol,
            summary: new.summary,
            statement: new.text,
            statement_sha256: new.key.hash,
            params: new.params,
            database: new.database,
            session: new.session,
            justification: new.justification,
            approvers: new.approvers,
            quorum: new.quorum,
            approvals: Vec::new(),
            denied_by: None,
            reason: None,
            created_at: now,
            expires_at: now + new.ttl_ms,
            decided_at: None,
            grant_until: None,
            used: false,
            key: Some(new.key),
            grant_ttl_ms: new.grant_ttl_ms,
        };
        inner.pending += 1;
        inner.requests.insert(
            id,
            Entry {
                request: request.clone(),
                watchers: Vec::new(),
            },
        );
        Ok((request, true))
    }

    fn get(&self, id: u64, now: u64) -> Result<Option<Request>, StoreError> {
        let mut inner = self.lock();
        inner.check_expiry(id, now);
        Ok(inner.requests.get(&id).map(|e| e.request.clone()))
    }

    fn list(&self, state: Option<State>, now: u64) -> Result<Vec<Request>, StoreError> {
        let mut inner = self.lock();
        let ids: Vec<u64> = inner.requests.keys().copied().collect();
        for id in ids {
            inner.check_expiry(id, now);
        }
        let mut out: Vec<Request> = inner
            .requests
            .values()
            .filter(|e| state.is_none_or(|s| e.request.state == s))
            .map(|e| e.request.clone())
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.id));
        Ok(out)
    }

    fn vote(
        &self,
        id: u64,
        voter: &Voter,
        decision: Decision,
        reason: Option<String>,
        now: u64,
    ) -> Result<Voted, VoteError> {
        let mut inner = self.lock();
        inner.check_expiry(id, now);
        let Some(e) = inner.requests.get_mut(&id) else {
            return Err(VoteError::NotFound(id));
        };
        let r = &mut e.request;
        may_vote(r, voter)?;
        match decision {
            Decision::Deny => {
                r.denied_by = Some(voter.subject.clone());
                r.reason = reason;
                inner.close(id, State::Denied, now, false);
                Ok(Voted {
                    request: inner.requests[&id].request.clone(),
                    counted: true,
                    decided: true,
                })
            }
            Decision::Approve => {
                let counted = !r.approvals.iter().any(|v| v.subject == voter.subject);
                if counted {
                    r.approvals.push(Vote {
                        subject: voter.subject.clone(),
                        at: now,
                    });
                    if reason.is_some() {
                        r.reason = reason;
                    }
                }
                let decided = r.approvals.len() >= r.quorum as usize;
                if decided {
                    inner.close(id, State::Approved, now, false);
                }
                Ok(Voted {
                    request: inner.requests[&id].request.clone(),
                    counted,
                    decided,
                })
            }
        }
    }

    fn cancel(&self, id: u64, now: u64) -> Result<Option<Request>, StoreError> {
        let mut inner = self.lock();
        if inner.requests.get(&id).map(|e| e.request.state) != Some(State::Pending) {
            return Ok(None);
        }
        inner.close(id, State::Cancelled, now, true);
        Ok(Some(inner.requests[&id].request.clone()))
    }

    fn consume(&self, id: u64, now: u64) -> Result<Option<Request>, StoreError> {
        let mut inner = self.lock();
        let Some(e) = inner.requests.get_mut(&id) else {
            return Ok(None);
        };
        let r = &mut e.request;
        let usable =
            r.state == State::Approved && !r.used && r.grant_until.is_some_and(|g| now < g);
        if !usable {
            return Ok(None);
        }
        r.used = true;
        Ok(Some(r.clone()))
    }

    fn take_grant(&self, key: &Key, now: u64) -> Result<Option<Request>, StoreError> {
        let mut inner = self.lock();
        let id = inner
            .requests
            .values()
            .filter(|e| {
                let r = &e.request;
                r.state == State::Approved
                    && !r.used
                    && r.grant_until.is_some_and(|g| now < g)
                    && r.key.as_ref() == Some(key)
            })
            .map(|e| e.request.id)
            .min();
        let Some(e) = id.and_then(|id| inner.requests.get_mut(&id)) else {
            return Ok(None);
        };
        e.request.used = true;
        Ok(Some(e.request.clone()))
    }

    fn expire(&self, now: u64) -> Result<Vec<Request>, StoreError> {
        let mut inner = self.lock();
        let due: Vec<u64> = inner
            .requests
            .values()
            .filter(|e| e.request.state == State::Pending && now >= e.request.expires_at)
            .map(|e| e.request.id)
            .collect();
        for id in due {
            inner.check_expiry(id, now);
        }
        Ok(std::mem::take(&mut inner.unreported))
    }

    fn wake(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(e) = inner.requests.get_mut(&id) {
            for w in e.watchers.drain(..) {
                let _ = w.try_send(());
            }
        }
    }

    fn watch(&self, id: u64) -> flume::Receiver<()> {
        let (tx, rx) = flume::bounded(1);
        let mut inner = self.lock();
        match inner.requests.get_mut(&id) {
            Some(e) if e.request.state == State::Pending => {
                e.watchers.retain(|w| !w.is_disconnected());
                e.watchers.push(tx)
            }
            // Already closed (or gone): the receiver fires at once.
            _ => {
                let _ = tx.try_send(());
            }
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(requester: &str, text: &str, quorum: u8) -> NewRequest {
        let mut hash = [0u8; 32];
        hash[..text.len().min(32)].copy_from_slice(&text.as_bytes()[..text.len().min(32)]);
        NewRequest {
            key: Key {
                requester: requester.into(),
                target: "orders".into(),
                hash,
            },
            protocol: "postgres",
            summary: "DELETE".into(),
            text: text.into(),
            params: Vec::new(),
            database: "orders".into(),
            session: "s".into(),
            justification: None,
            approvers: vec!["dba".to_owned()].into(),
            quorum,
            ttl_ms: 1000,
            grant_ttl_ms: 500,
            reuse: false,
        }
    }

    fn voter(subject: &str, groups: &[&str]) -> Voter {
        Voter {
            subject: subject.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn segregation_of_duties_rules() {
        let s = MemoryStore::default();
        let (r, created) = s.open(new("alice", "DELETE 1", 2), 0, 10).unwrap();
        assert!(created);
        // The requester cannot approve, even in the approver group.
        assert_eq!(
            s.vote(r.id, &voter("alice", &["dba"]), Decision::Approve, None, 1)
                .unwrap_err(),
            VoteError::OwnRequest("alice".into())
        );
        assert!(matches!(
            s.vote(
                r.id,
                &voter("mallory", &["dev"]),
                Decision::Approve,
                None,
                1
            ),
            Err(VoteError::NotApprover { .. })
        ));
        // The same person twice counts once.
        let v = s
            .vote(r.id, &voter("bob", &["dba"]), Decision::Approve, None, 2)
            .unwrap();
        assert!(v.counted && !v.decided);
        let v = s
            .vote(r.id, &voter("bob", &["dba"]), Decision::Approve, None, 3)
            .unwrap();
        assert!(!v.counted && !v.decided);
        assert_eq!(v.request.state, State::Pending);
        let v = s
            .vote(r.id, &voter("carol", &["dba"]), Decision::Approve, None, 4)
            .unwrap();
        assert!(v.decided);
        assert_eq!(v.request.state, State::Approved);
        assert_eq!(v.request.grant_until, Some(504));
        // Closed: no more votes.
        assert!(matches!(
            s.vote(r.id, &voter("dave", &["dba"]), Decision::Deny, None, 5),
            Err(VoteError::Closed { .. })
        ));
        // Used once.
        assert!(s.consume(r.id, 10).unwrap().is_some());
        assert!(s.consume(r.id, 11).unwrap().is_none());
        assert!(s.take_grant(r.key.as_ref().unwrap(), 12).unwrap().is_none());
    }

    #[test]
    fn deny_is_final_and_expiry_blocks_approval() {
        let s = MemoryStore::default();
        let (a, _) = s.open(new("alice", "DELETE 1", 2), 0, 10).unwrap();
        s.vote(a.id, &voter("bob", &["dba"]), Decision::Approve, None, 1)
            .unwrap();
        let v = s
            .vote(
                a.id,
                &voter("carol", &["dba"]),
                Decision::Deny,
                Some("no".into()),
                2,
            )
            .unwrap();
        assert_eq!(v.request.state, State::Denied);
        assert_eq!(v.request.denied_by.as_deref(), Some("carol"));
        let (b, _) = s.open(new("alice", "DELETE 2", 1), 0, 10).unwrap();
        assert!(matches!(
            s.vote(b.id, &voter("bob", &["dba"]), Decision::Approve, None, 1000),
            Err(VoteError::Closed {
                state: "expired",
                ..
            })
        ));
        assert_eq!(s.get(b.id, 1001).unwrap().unwrap().state, State::Expired);
    }

    #[test]
    fn grant_window_matches_the_exact_key_once() {
        let s = MemoryStore::default();
        let (r, _) = s.open(new("alice", "DELETE 1", 1), 0, 10).unwrap();
        s.vote(r.id, &voter("bob", &["dba"]), Decision::Approve, None, 10)
            .unwrap();
        let key = r.key.clone().unwrap();
        let mut other = key.clone();
        other.hash[0] ^= 1;
        assert!(
            s.take_grant(&other, 20).unwrap().is_none(),
            "edited statement"
        );
        let mut someone = key.clone();
        someone.requester = "eve".into();
        assert!(
            s.take_grant(&someone, 20).unwrap().is_none(),
            "another requester"
        );
        assert!(
            s.take_grant(&key, 600).unwrap().is_none(),
            "past the grant window"
        );
        assert!(s.take_grant(&key, 20).unwrap().is_some());
        assert!(s.take_grant(&key, 21).unwrap().is_none(), "once");
    }

    #[test]
    fn reuse_pending_bounds_and_watch() {
        let s = MemoryStore::default();
        let mut n = new("alice", "DELETE 1", 1);
        n.reuse = true;
        let (a, created) = s.open(n.clone(), 0, 2).unwrap();
        assert!(created);
        let (b, created) = s.open(n.clone(), 1, 2).unwrap();
        assert!(!created && b.id == a.id);
        s.open(new("alice", "DELETE 2", 1), 0, 2).unwrap();
        assert!(matches!(
            s.open(new("alice", "DELETE 3", 1), 0, 2),
            Err(OpenError::TooMany(2))
        ));
        let w = s.watch(a.id);
        assert!(w.try_recv().is_err());
        assert!(s.cancel(a.id, 5).unwrap().is_some());
        assert!(w.try_recv().is_ok());
        let (b, _) = s.open(new("bob", "DELETE 9", 1), 0, 10).unwrap();
        let wb = s.watch(b.id);
        s.vote(b.id, &voter("carol", &["dba"]), Decision::Approve, None, 1)
            .unwrap();
        assert!(
            wb.try_recv().is_err(),
            "a vote wakes watchers only once reported"
        );
        s.wake(b.id);
        assert!(wb.try_recv().is_ok());
        assert!(s.cancel(a.id, 6).unwrap().is_none());
        assert_eq!(s.expire(5000).unwrap().len(), 1);
        assert!(s.list(Some(State::Pending), 5000).unwrap().is_empty());
    }
}
