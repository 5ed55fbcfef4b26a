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
/// Most sessions one subject keeps (a new one ends their oldest).
const MAX_PER_SUBJECT: usize = 16;
/// The longest a console session lasts, whatever the token's lifetime (seconds).
pub const MAX_SESSION_AGE: u64 = 8 * 3600;

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
    /// Sign-ins away at the identity provider: state → the flow.
    flows: HashMap<String, Flow>,
}

struct Session {
    identity: Identity,
    csrf: String,
    /// When it ends: the token's expiry or [`MAX_SESSION_AGE`], the sooner.
    until: u64,
    opened: u64,
}

/// A sign-in at the identity provider: the PKCE verifier, the browser it
/// belongs to (a random value in that browser's cookie), and until when.
struct Flow {
    verifier: String,
    browser: String,
    until: u64,
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

    /// A new session for `identity`: its id and CSRF token; `None` when too
    /// many are open. A subject's oldest session ends when they open more
    /// than [`MAX_PER_SUBJECT`].
    pub fn open(&self, identity: Identity) -> Option<(String, String)> {
        let (id, csrf) = (random_id(), random_id());
        let mut inner = self.lock();
        let now = unix_now();
        inner.sessions.retain(|_, s| s.until > now);
        let mut theirs: Vec<(u64, String)> = inner
            .sessions
            .iter()
            .filter(|(_, s)| s.identity.subject == identity.subject)
            .map(|(k, s)| (s.opened, k.clone()))
            .collect();
        theirs.sort();
        while theirs.len() >= MAX_PER_SUBJECT {
            let (_, oldest) = theirs.remove(0);
            inner.sessions.remove(&oldest);
        }
        if inner.sessions.len() >= MAX_SESSIONS {
            return None;
        }
        let until = identity.expires_at.min(now + MAX_SESSION_AGE);
        inner.sessions.insert(
            id.clone(),
            Session {
                identity,
                csrf: csrf.clone(),
                until,
                opened: now,
            },
        );
        Some((id, csrf))
    }

    /// The identity and CSRF token of an open session.
    pub fn get(&self, id: &str) -> Option<(Identity, String)> {
        let mut inner = self.lock();
        let s = inner.sessions.get(id)?;
        if s.until <= unix_now() {
            inner.sessions.remove(id);
            return None;
        }
        Some((s.identity.clone(), s.csrf.clone()))
    }

    pub fn close(&self, id: &str) {
        self.lock().sessions.remove(id);
    }

    /// A one-time sign-in link for `identity`; `None` when too many are
    /// waiting.
    pub fn link(&self, identity: Identity) -> Option<String> {
        let code = random_id();
        let mut inner = self.lock();
        let now = unix_now();
        inner.links.retain(|_, (_, until)| *until > now);
        if inner.links.len() >= MAX_SESSIONS {
            return None;
        }
        inner.links.insert(code.clone(), (identity, now + LINK_TTL));
        Some(code)
    }

    /// Whether a link is still good (without spending it).
    pub fn link_valid(&self, code: &str) -> bool {
        self.lock()
            .links
            .get(code)
            .is_some_and(|(_, until)| *until > unix_now())
    }

    /// Spends a link: the identity it was made for (once, within its minute).
    pub fn redeem(&self, code: &str) -> Option<Identity> {
        let (identity, until) = self.lock().links.remove(code)?;
        let now = unix_now();
        (until > now && identity.expires_at > now).then_some(identity)
    }

    /// A sign-in that left for the provider, under its `state`, from the
    /// browser holding `browser`.
    pub fn begin_flow(&self, state: &str, verifier: &str, browser: &str) {
        let mut inner = self.lock();
        let now = unix_now();
        inner.flows.retain(|_, f| f.until > now);
        // Full: the oldest flow gives way (a flood of starts cannot lock
        // everyone out of signing in; each browser's own start is newest).
        while inner.flows.len() >= MAX_SESSIONS {
            let Some(oldest) = inner
                .flows
                .iter()
                .min_by_key(|(_, f)| f.until)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            inner.flows.remove(&oldest);
        }
        inner.flows.insert(
            state.to_owned(),
            Flow {
                verifier: verifier.to_owned(),
                browser: browser.to_owned(),
                until: now + FLOW_TTL,
            },
        );
    }

    /// The PKCE verifier of the flow `state` names, if `browser` started it
    /// (once, within its time: any attempt ends the flow).
    pub fn finish_flow(&self, state: &str, browser: &str) -> Option<String> {
        let f = self.lock().flows.remove(state)?;
        let same = f.browser.len() == browser.len()
            && f.browser
                .bytes()
                .zip(browser.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0;
        (same && f.until > unix_now()).then_some(f.verifier)
    }
}
