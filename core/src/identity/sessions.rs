//! Browser sessions of the web console: each bound to an identity verified
//! from a token, ending when that token would have; one-time sign-in links;
//! and sign-ins away at the identity provider. Shared by every shard.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{unix_now, Identity};

/// How long a one-time sign-in link is good for (seconds).
pub const LINK_TTL: u64 = 60;
/// How long a sign-in may spend at the identity provider (seconds).
pub const FLOW_TTL: u64 = 600;
/// Most sessions, links or flows kept at once.
const MAX_SESSIONS: usize = 10_000;

/// Signed-in browsers and unused sign-in links, shared by every shard.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    /// One-time sign-in links: who, and until when (Unix seconds).
    links: HashMap<String, (Identity, u64)>,
    /// Sign-ins away at the identity provider: state → (PKCE verifier, until).
    flows: HashMap<String, (String, u64)>,
}

struct Session {
    identity: Identity,
    csrf: String,
}

pub fn random_id() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source is available");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.lock()
    }

    /// A new session for `identity`: its id and CSRF token (empty when
    /// too many are open).
    pub fn open(&self, identity: Identity) -> (String, String) {
        let (id, csrf) = (random_id(), random_id());
        let mut inner = self.lock();
        let now = unix_now();
        inner.sessions.retain(|_, s| s.identity.expires_at > now);
        if inner.sessions.len() >= MAX_SESSIONS {
            return (String::new(), String::new());
        }
        inner.sessions.insert(
            id.clone(),
            Session {
                identity,
                csrf: csrf.clone(),
            },
        );
        (id, csrf)
    }

    /// The identity and CSRF token of an open session.
    pub fn get(&self, id: &str) -> Option<(Identity, String)> {
        let mut inner = self.lock();
        let s = inner.sessions.get(id)?;
        if s.identity.expires_at <= unix_now() {
            inner.sessions.remove(id);
            return None;
        }
        Some((s.identity.clone(), s.csrf.clone()))
    }

    pub fn close(&self, id: &str) {
        self.lock().sessions.remove(id);
    }

    /// A one-time sign-in link for `identity` (whose session ends when its
    /// token would have).
    pub fn link(&self, identity: Identity) -> String {
        let code = random_id();
        let mut inner = self.lock();
        let now = unix_now();
        inner.links.retain(|_, (_, until)| *until > now);
        if inner.links.len() < MAX_SESSIONS {
            inner.links.insert(code.clone(), (identity, now + LINK_TTL));
        }
        code
    }

    /// Spends a link: the identity it was made for (once, within its minute).
    pub fn redeem(&self, code: &str) -> Option<Identity> {
        let (identity, until) = self.lock().links.remove(code)?;
        let now = unix_now();
        (until > now && identity.expires_at > now).then_some(identity)
    }
}

impl Sessions {
    /// A sign-in that left for the provider, under its `state`.
    pub fn begin_flow(&self, state: &str, verifier: &str) {
        let mut inner = self.inner();
        let now = unix_now();
        inner.flows.retain(|_, (_, until)| *until > now);
        if inner.flows.len() < MAX_SESSIONS {
            inner
                .flows
                .insert(state.to_owned(), (verifier.to_owned(), now + FLOW_TTL));
        }
    }

    /// The PKCE verifier of the flow `state` names (once, within its time).
    pub fn finish_flow(&self, state: &str) -> Option<String> {
        let (verifier, until) = self.inner().flows.remove(state)?;
        (until > unix_now()).then_some(verifier)
    }
}
