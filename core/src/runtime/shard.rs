//! One shard: a monoio runtime on its own OS thread, with its own `SO_REUSEPORT`
//! listener for every target, its own metrics and its own copy of the configuration.
//! Nothing on the data path is shared with other shards; they only exchange
//! [`Control`] messages (shutdown, reload, metrics scrape).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use sluice_config::{Config, Protocol, Target};

use super::catch::{panic_message, CatchUnwind};
use super::notify::{Latch, Notify};
use super::{Control, Shared};
use crate::audit::ShardAudit;
use crate::identity::cache::TokenCache;
use crate::identity::{AuthError, Identity, Verifier};
use crate::metrics::{ErrorKind, ShardMetrics};
use crate::{gateway, info, warn};
use sluice_config::policy::CompiledPolicy;

pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    config: RefCell<Arc<Config>>,
    /// This shard's own copy (not shared: reading it never touches another
    /// core's cache line), and how many times it has been replaced.
    policy: RefCell<Rc<CompiledPolicy>>,
    policy_generation: Cell<u64>,
    verifier: Option<Verifier>,
    tokens: RefCell<TokenCache>,
    sql_cache: RefCell<crate::policy::cache::SqlCache>,
    /// This shard's side of the audit pipeline (set when the shard starts).
    pub audit: std::cell::OnceCell<Rc<ShardAudit>>,
    /// The targets as configured at start-up (one listener each).
    startup_targets: Vec<Target>,
    pub metrics: ShardMetrics,
    sessions: Cell<usize>,
    idle: Notify,
    pub stopping: Latch,
}

/// Binds a listener that shares its port with the other shards' listeners.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind_with_config(addr, &ListenerOpts::new().reuse_port(true).backlog(4096))
}

impl Shard {
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        config: Arc<Config>,
        policy: Arc<CompiledPolicy>,
    ) -> Rc<Self> {
        let metrics = ShardMetrics::new(config.targets.iter().map(|t| t.name.clone()));
        let verifier = shared.verifier.clone().map(Verifier::new);
        let startup_targets = config.targets.clone();
        Rc::new(Shard {
            id,
            shared,
            config: RefCell::new(config),
            policy: RefCell::new(Rc::new((*policy).clone())),
            policy_generation: Cell::new(0),
            verifier,
            tokens: RefCell::new(TokenCache::new(10_000)),
            sql_cache: RefCell::new(Default::default()),
            startup_targets,
            audit: std::cell::OnceCell::new(),
            metrics,
            sessions: Cell::new(0),
            idle: Notify::default(),
            stopping: Latch::default(),
        })
    }

    /// The configuration in force; a reload swaps it between sessions' steps.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
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

    /// The compiled policy in force (swapped by a reload between statements).
    pub fn policy(&self) -> Rc<CompiledPolicy> {
        self.policy.borrow().clone()
    }

    /// Bumped by every reload: lets sessions cache what they derived from it.
    pub fn policy_generation(&self) -> u64 {
        self.policy_generation.get()
    }

    /// Validates a caller's token: from this shard's cache when it has seen it,
    /// otherwise with a signature check. A token naming an unknown key triggers one
    /// (rate-limited) JWKS refresh and a second try.
    pub async fn authenticate(&self, token: &str) -> Result<Rc<Identity>, AuthError> {
        let (Some(verifier), Some(keys)) = (&self.verifier, &self.shared.keys) else {
            return Err(AuthError::Missing);
        };
        let now = crate::identity::unix_now();
        let mut set = keys.keys();
        if let Some(id) = self.tokens.borrow_mut().get(token, now, set.generation) {
            return Ok(id);
        }
        let mut result = verifier.verify(token, &set, now);
        if matches!(result, Err(AuthError::UnknownKid(_))) && keys.request_refresh() {
            // Wait (without blocking the shard) for the refresher to publish.
            let before = set.generation;
            for _ in 0..100 {
                monoio::time::sleep(std::time::Duration::from_millis(20)).await;
                if keys.generation() != before {
                    break;
                }
            }
            set = keys.keys();
            result = verifier.verify(token, &set, now);
        }
        let id = Rc::new(result?);
        self.tokens.borrow_mut().insert(token, id.clone(), now);
        Ok(id)
    }

    /// Runs the shard until it is told to stop and its sessions have drained.
    ///
    /// `ready` receives `Ok` once every listener is bound, or the reason it could not.
    pub async fn run(
        self: Rc<Self>,
        control: flume::Receiver<Control>,
        ready: std::sync::mpsc::Sender<Result<(), String>>,
        audit_link: Option<crate::audit::ShardLink>,
    ) {
        if let (Some(audit), Some(link)) = (self.shared.audit.clone(), audit_link) {
            let _ = self.audit.set(ShardAudit::new(audit, link));
        }
        let config = self.config();
        let mut listeners = Vec::with_capacity(config.targets.len());
        for (index, t) in config.targets.iter().enumerate() {
            match bind(t.listen) {
                Ok(l) => listeners.push((index, l)),
                Err(e) => {
                    let _ = ready.send(Err(format!(
                        "target `{}`: cannot listen on {}: {e}",
                        t.name, t.listen
                    )));
                    return;
                }
            }
        }
        let admin = match config.gateway.admin.map(bind).transpose() {
            Ok(a) => a,
            Err(e) => {
                let _ = ready.send(Err(format!("admin listener: cannot listen: {e}")));
                return;
            }
        };
        let _ = ready.send(Ok(()));

        monoio::spawn(control_loop(self.clone(), control));
        for (index, listener) in listeners {
            let shard = self.clone();
            monoio::spawn(accept_loop(self.clone(), listener, move |stream, peer| {
                shard.clone().session(index, stream, peer)
            }));
        }
        if let Some(listener) = admin {
            let shard = self.clone();
            monoio::spawn(accept_loop(self.clone(), listener, move |stream, _| {
                crate::admin::serve_connection(shard.clone(), stream)
            }));
        }

        self.stopping.wait().await;
        let open = self.sessions.get();
        if open > 0 {
            info!("draining", shard = self.id, sessions = open);
            let drain = config.gateway.drain_timeout;
            if monoio::time::timeout(drain, self.wait_idle())
                .await
                .is_err()
            {
                warn!(
                    "drain_timeout",
                    shard = self.id,
                    sessions_closed = self.sessions.get(),
                    timeout_ms = drain.as_millis()
                );
            }
        }
    }

    async fn wait_idle(&self) {
        while self.sessions.get() > 0 {
            self.idle.notified().await;
        }
    }

    /// One client connection to target `index`, from accept to close.
    async fn session(self: Rc<Self>, index: usize, stream: TcpStream, peer: SocketAddr) {
        let _guard = SessionGuard::new(&self, index);
        let started = Instant::now();
        let config = self.config();
        let name = &self.metrics.targets[index].0;
        // A reload may have removed the target; its listener stays until restart.
        let Some(target) = config.targets.iter().find(|t| &t.name == name) else {
            warn!(
                "target_removed",
                shard = self.id,
                target = name,
                peer = peer
            );
            // The listener was bound for the start-up target of this name.
            if let Some(t) = self.startup_targets.iter().find(|t| &t.name == name) {
                if t.protocol == Protocol::Postgres {
                    gateway::postgres::refuse_removed_target(&self, t, stream).await;
                }
            }
            return;
        };
        let result = CatchUnwind::new(self.dispatch(index, target, &config, stream, peer)).await;
        if let Err(panic) = result {
            self.metrics.error(ErrorKind::Panic);
            crate::error!(
                "session_panic",
                shard = self.id,
                target = name,
                peer = peer,
                message = panic_message(&*panic)
            );
        }
        self.metrics.session_ended(started.elapsed());
    }

    async fn dispatch(
        &self,
        index: usize,
        target: &Target,
        config: &Config,
        stream: TcpStream,
        peer: SocketAddr,
    ) {
        match target.protocol {
            Protocol::Tcp => gateway::tcp::serve(self, index, target, config, stream, peer).await,
            Protocol::Postgres => {
                gateway::postgres::serve(self, index, target, config, stream, peer).await
            }
            Protocol::Http => gateway::http::serve(self, index, target, config, stream, peer).await,
            // Refused at start-up (see `runtime::serve`); a reload cannot add listeners.
            other => warn!(
                "protocol_unavailable",
                target = target.name,
                protocol = other.as_str()
            ),
        }
    }
}

struct SessionGuard<'a> {
    shard: &'a Shard,
    index: usize,
}

impl<'a> SessionGuard<'a> {
    fn new(shard: &'a Shard, index: usize) -> Self {
        shard.sessions.set(shard.sessions.get() + 1);
        shard.metrics.target(index).opened();
        SessionGuard { shard, index }
    }
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

async fn control_loop(shard: Rc<Shard>, control: flume::Receiver<Control>) {
    while let Ok(message) = control.recv_async().await {
        match message {
            Control::Shutdown => shard.stopping.set(),
            Control::Reload(config, policy) => {
                *shard.config.borrow_mut() = config;
                *shard.policy.borrow_mut() = Rc::new((*policy).clone());
                shard
                    .policy_generation
                    .set(shard.policy_generation.get() + 1);
            }
            Control::Scrape(reply) => {
                let _ = reply.send(shard.metrics.snapshot(shard.id));
            }
        }
    }
}

/// Accepts connections until the shard stops, then closes the listener so the
/// kernel sends new connections to no one (they are refused).
async fn accept_loop<F, Fut>(shard: Rc<Shard>, listener: TcpListener, mut handle: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let stop = shard.stopping.wait();
    let mut stop = std::pin::pin!(stop);
    loop {
        monoio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    monoio::spawn(handle(stream, peer));
                }
                Err(e) => {
                    shard.metrics.error(ErrorKind::Accept);
                    warn!("accept_failed", shard = shard.id, error = e);
                    // Out of descriptors or memory: back off instead of spinning.
                    monoio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}
