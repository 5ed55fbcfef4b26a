//! SSH targets (`protocol = "ssh"`): unchanged OpenSSH clients log in with
//! their access token as the password (password or keyboard-interactive);
//! Sluice logs in to the upstream with the target's own key or password,
//! having checked the upstream's pinned host key, and relays each channel:
//! `exec` commands judged by the command rules (denied: a message on stderr
//! and exit status 126, nothing reaches the host; held: the approval flow),
//! shells and sftp as the guardrails say, forwarding of ports, agents and X11
//! refused. Every command is recorded in the audit log and every channel as
//! an asciicast recording whose SHA-256 goes into the hash chain.
//!
//! russh needs tokio, so the endpoint runs on a small tokio runtime of its own
//! beside the monoio shards, and shares identity, policy, approvals and the
//! audit log with them through [`Shared`] and the configuration generation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use russh::keys::PrivateKey;
use sluice_config::Protocol;

use crate::identity::Verifier;
use crate::shard::{Generation, Shared};
use crate::{info, warn};

mod certificate;
mod channel;
mod recording;
mod screen;
mod session;
mod upstream;

/// What every SSH connection shares.
pub(crate) struct Endpoint {
    pub shared: Arc<Shared>,
    /// The configuration in force (swapped on reload).
    pub current: ArcSwap<Generation>,
    pub verifier: Option<Verifier>,
    pub stopping: AtomicBool,
    /// Where recordings go (`AUDIT_DIR/sessions`); `None` without `[audit]`.
    pub recordings: Option<PathBuf>,
    /// Open connections, logged in or not.
    open: std::sync::atomic::AtomicUsize,
}

/// Most connections the endpoint keeps open; more are closed at accept.
const MAX_CONNECTIONS: usize = 4096;
/// How long a connection may take to log in.
const LOGIN_GRACE: Duration = Duration::from_secs(60);

/// One of the endpoint's open connections, released when dropped.
pub(crate) struct Slot(Arc<Endpoint>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The running SSH endpoint; dropping it stops it.
pub struct SshEndpoint {
    runtime: Option<tokio::runtime::Runtime>,
    endpoint: Arc<Endpoint>,
}

/// Worker threads of the SSH runtime: SSH sessions are few and long next to
/// database queries; two threads keep one slow handshake from stalling others.
const WORKERS: usize = 2;

/// Starts the endpoint when the configuration has SSH targets (`Ok(None)`
/// otherwise). `base` is the configuration file's directory: a target without
/// `host_key` keeps its generated key there.
pub fn start(
    shared: Arc<Shared>,
    generation: Arc<Generation>,
    base: &Path,
) -> Result<Option<SshEndpoint>, String> {
    let config = generation.config.clone();
    let targets: Vec<_> = config
        .targets
        .iter()
        .filter(|t| t.protocol == Protocol::Ssh)
        .collect();
    if targets.is_empty() {
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name("sluice-ssh")
        .enable_all()
        .build()
        .map_err(|e| format!("ssh: cannot start the runtime: {e}"))?;
    let recordings = config
        .audit
        .as_ref()
        .map(|a| PathBuf::from(&a.dir).join("sessions"));
    if let Some(dir) = &recordings {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("ssh: cannot create {}: {e}", dir.display()))?;
    }
    let endpoint = Arc::new(Endpoint {
        verifier: shared.verifier.clone().map(Verifier::new),
        shared,
        current: ArcSwap::new(generation.clone()),
        stopping: AtomicBool::new(false),
        recordings,
        open: Default::default(),
    });
    for t in targets {
        let path = t.host_key.as_ref().map_or_else(
            || base.join(format!("{}.ssh_host_ed25519_key", t.name)),
            PathBuf::from,
        );
        let key = host_key(&path).map_err(|e| format!("target `{}`: {e}", t.name))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(t.listen))
            .map_err(|e| format!("target `{}`: cannot listen on {}: {e}", t.name, t.listen))?;
        let server = Arc::new(session::server_config(key));
        runtime.spawn(accept(endpoint.clone(), listener, t.name.clone(), server));
    }
    Ok(Some(SshEndpoint {
        runtime: Some(runtime),
        endpoint,
    }))
}

impl SshEndpoint {
    /// A reload: new sessions and every decision use `generation`.
    pub fn reload(&self, generation: Arc<Generation>) {
        self.endpoint.current.store(generation);
    }

    /// Stops accepting, tells waiting sessions to give up, and gives open
    /// sessions up to `drain` to finish.
    pub fn stop(mut self, drain: Duration) {
        self.endpoint.stopping.store(true, Ordering::Release);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(drain);
        }
    }
}

async fn accept(
    endpoint: Arc<Endpoint>,
    listener: tokio::net::TcpListener,
    target: String,
    server: Arc<russh::server::Config>,
) {
    loop {
        if endpoint.stopping.load(Ordering::Acquire) {
            return;
        }
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("accept_failed", target = target, error = e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if endpoint.open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            endpoint.open.fetch_sub(1, Ordering::AcqRel);
            warn!(
                "ssh_connection_refused",
                target = target,
                peer = peer,
                reason = "too many open connections"
            );
            continue;
        }
        let slot = Slot(endpoint.clone());
        let _ = stream.set_nodelay(true);
        let handler =
            session::Connection::new(endpoint.clone(), target.clone(), peer, &stream, slot);
        let logged_in = handler.logged_in.clone();
        let server = server.clone();
        tokio::spawn(async move {
            // The version exchange and the login get LOGIN_GRACE in all.
            let started = tokio::time::timeout(
                LOGIN_GRACE,
                russh::server::run_stream(server, stream, handler),
            );
            let running = match started.await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return crate::debug!("ssh_handshake_failed", peer = peer, error = e),
                Err(_) => return crate::debug!("ssh_login_timeout", peer = peer),
            };
            let handle = running.handle();
            tokio::spawn(async move {
                tokio::time::sleep(LOGIN_GRACE).await;
                if !logged_in.load(Ordering::Acquire) {
                    let _ = handle
                        .disconnect(
                            russh::Disconnect::ByApplication,
                            "no login in time".into(),
                            String::new(),
                        )
                        .await;
                }
            });
            if let Err(e) = running.await {
                crate::debug!("ssh_session_ended", peer = peer, error = e);
            }
        });
    }
}

/// Sluice's own host key for a target: read from `path`, or generated there
/// (Ed25519, mode 0600) on first start.
fn host_key(path: &Path) -> Result<PrivateKey, String> {
    if path.exists() {
        return russh::keys::load_secret_key(path, None)
            .map_err(|e| format!("host key {}: {e}", path.display()));
    }
    let key = PrivateKey::random(
        &mut russh::keys::key::safe_rng(),
        russh::keys::Algorithm::Ed25519,
    )
    .map_err(|e| format!("cannot generate a host key: {e}"))?;
    key.write_openssh_file(path, russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| format!("cannot write the host key {}: {e}", path.display()))?;
    info!("ssh_host_key_created", path = path.display());
    Ok(key)
}

/// A peer address for logs and records.
fn peer_text(peer: SocketAddr) -> String {
    peer.to_string()
}
