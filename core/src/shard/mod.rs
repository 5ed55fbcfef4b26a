//! Per-shard state: everything one shard's sessions read and cache, with no
//! knowledge of the loops that drive them (those are in `runtime`).
//!
//! A shard is one OS thread; nothing here is shared with another shard except
//! through [`Shared`], which is touched per connection at most. The
//! configuration in force is a [`Generation`]: compiled once per (re)load,
//! copied into each shard, swapped between sessions' steps.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use crate::audit::ShardAudit;
use crate::identity::cache::TokenCache;
use crate::identity::{AuthError, Identity, Verifier};
use crate::metrics::ShardMetrics;
use crate::notify::{Latch, Notify};
use crate::policy::cache::SqlCache;
use crate::policy::{Judge, Resolved, Verdict};
use crate::upstream::Pool;
use sluice_protocols::sql::{Dialect, Statement};

mod cancel;
pub mod catalogs;
pub mod generation;
mod shared;

pub use cancel::{CancelRegistry, CancelTarget};
pub use generation::{Generation, TargetPlan};
pub use shared::{Control, Event, Shared};

pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    /// This shard's own copy of the configuration in force (not shared:
    /// reading it never touches another core's cache line).
    generation: RefCell<Rc<Generation>>,
    verifier: Option<Verifier>,
    tokens: RefCell<TokenCache>,
    sql_cache: RefCell<SqlCache>,
    /// Idle upstream connections (HTTP reuses them across callers).
    pool: RefCell<Pool>,
    /// What PostgreSQL logins learned from each database's catalog.
    catalogs: RefCell<catalogs::Catalogs>,
    /// This shard's side of the audit pipeline (set when the shard starts).
    pub audit: std::cell::OnceCell<Rc<ShardAudit>>,
    /// The generation the shard started with: one listener per target.
    startup: Rc<Generation>,
    pub metrics: ShardMetrics,
    sessions: Cell<usize>,
    idle: Notify,
    pub stopping: Latch,
}

impl Shard {
    pub fn new(id: usize, shared: Arc<Shared>, generation: &Generation) -> Rc<Self> {
        let generation = Rc::new(generation.for_shard());
        let metrics = ShardMetrics::new(generation.config.targets.iter().map(|t| t.name.clone()));
        let verifier = shared.verifier.clone().map(Verifier::new);
        Rc::new(Shard {
            id,
            shared,
            startup: generation.clone(),
            generation: RefCell::new(generation),
            verifier,
            tokens: RefCell::new(TokenCache::new(10_000)),
            sql_cache: RefCell::new(Default::default()),
            pool: RefCell::new(Pool::default()),
            catalogs: RefCell::new(Default::default()),
            audit: std::cell::OnceCell::new(),
            metrics,
            sessions: Cell::new(0),
            idle: Notify::default(),
            stopping: Latch::default(),
        })
    }

    /// The configuration in force; a reload swaps it between sessions' steps.
    /// A session keeps the one it started with for what it set up once
    /// (masking, upstream TLS) and asks again for each decision.
    pub fn generation(&self) -> Rc<Generation> {
        self.generation.borrow().clone()
    }

    /// Idle upstream connections, by target and generation.
    pub fn pool(&self) -> std::cell::RefMut<'_, Pool> {
        self.pool.borrow_mut()
    }

    /// Catalogs PostgreSQL logins resolved, by target, database and rules.
    pub fn catalogs(&self) -> std::cell::RefMut<'_, catalogs::Catalogs> {
        self.catalogs.borrow_mut()
    }

    /// The generation the shard started with (its listeners are for its targets).
    pub fn startup(&self) -> &Rc<Generation> {
        &self.startup
    }

    /// Installs a newly compiled generation: this shard's own copy of it.
    /// Idle upstream connections of earlier generations are closed: the new
    /// one may name another upstream or other TLS settings.
    pub fn install(&self, generation: &Generation) {
        *self.generation.borrow_mut() = Rc::new(generation.for_shard());
        self.pool.borrow_mut().retain_generation(generation.number);
    }

    /// This shard's audit handle, if auditing is on.
    pub fn audit(&self) -> Option<&Rc<ShardAudit>> {
        self.audit.get()
    }

    /// Classifies SQL through this shard's cache.
    pub fn classify(
        &self,
        sql: &[u8],
        dialect: sluice_protocols::sql::Dialect,
    ) -> Rc<[sluice_protocols::sql::Statement]> {
        self.sql_cache.borrow_mut().classify(sql, dialect)
    }

    /// Judges the SQL of a `Query` or `Parse` for the caller on target `index`
    /// by the policy in force; also returns the classification (for the audit
    /// record).
    pub fn judge(
        &self,
        index: usize,
        identity: &Identity,
        resolved: &Resolved,
        sql: &[u8],
    ) -> (Verdict, Rc<[Statement]>) {
        let statements = self.classify(sql, Dialect::Postgres);
        let verdict = self.judge_statements(index, identity, resolved, &statements);
        (verdict, statements)
    }

    /// Judges statements already classified (or built by the driver).
    pub fn judge_statements(
        &self,
        index: usize,
        identity: &Identity,
        resolved: &Resolved,
        statements: &[Statement],
    ) -> Verdict {
        let generation = self.generation.borrow();
        let judge = Judge {
            policy: &generation.policy,
            generation: generation.number,
            target: self.target_name(index),
        };
        crate::policy::decide(&judge, identity, resolved, statements)
    }

    /// The name of the target a listener was bound for.
    pub fn target_name(&self, index: usize) -> &str {
        &self.metrics.targets[index].0
    }

    /// Validates a caller's token: from this shard's cache when it has seen it,
    /// otherwise with a signature check. A token naming an unknown key triggers one
    /// (rate-limited) JWKS refresh and a second try.
    pub async fn authenticate(&self, token: &str) -> Result<Rc<Identity>, AuthError> {
        let (Some(verifier), Some(keys)) = (&self.verifier, &self.shared.keys) else {
            return Err(AuthError::Missing);
        };
        let now = crate::identity::unix_now();
        let generation = keys.keys().generation;
        if let Some(id) = self.tokens.borrow_mut().get(token, now, generation) {
            return Ok(id);
        }
        let result =
            crate::identity::verify_fresh(verifier, keys, token, now, monoio::time::sleep).await;
        let id = Rc::new(result?);
        self.tokens.borrow_mut().insert(token, id.clone(), now);
        Ok(id)
    }

    /// Counts a data-path error under its kind (if it is one that counts).
    pub fn failed(&self, e: &crate::error::Error) {
        if let Some(kind) = e.metric() {
            self.metrics.error(kind);
        }
    }

    /// Counts a session open until the guard drops.
    pub fn session_opened(&self, index: usize) -> SessionGuard<'_> {
        self.sessions.set(self.sessions.get() + 1);
        self.metrics.target(index).opened();
        SessionGuard { shard: self, index }
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.sessions.get()
    }

    /// Returns once no session is open.
    pub async fn wait_idle(&self) {
        while self.sessions.get() > 0 {
            self.idle.notified().await;
        }
    }
}

pub struct SessionGuard<'a> {
    shard: &'a Shard,
    index: usize,
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        let s = self.shard;
        s.metrics.target(self.index).closed();
        s.sessions.set(s.sessions.get() - 1);
        if s.sessions.get() == 0 {
            s.idle.notify_all();
        }
    }
}
