//! What every shard shares, and the messages shards take from other threads.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use super::{CancelRegistry, Generation};
use crate::audit::Audit;
use crate::identity::jwks::KeyStore;
use crate::identity::VerifierConfig;
use crate::metrics::Snapshot;

/// Messages a shard accepts from other threads.
pub enum Control {
    Shutdown,
    /// A newly compiled configuration: the shard installs its own copy.
    Reload(Arc<Generation>),
    Scrape(flume::Sender<Snapshot>),
}

/// Messages the process lifecycle (the main thread) accepts.
pub enum Event {
    Signal(i32),
    Drained,
    /// `POST /api/reload`: reload and answer with the errors, if any.
    Reload(flume::Sender<Result<(), String>>),
}

/// What every shard shares: handles to each other and read-mostly state that is
/// touched per connection at most (keys, TLS configs, cancel keys), never per message.
pub struct Shared {
    pub controls: Vec<flume::Sender<Control>>,
    pub started: Instant,
    pub driver: &'static str,
    /// The pinned JWKS, when any target authenticates callers.
    pub keys: Option<Arc<KeyStore>>,
    pub verifier: Option<VerifierConfig>,
    /// Presented to clients that ask for TLS (`[tls]`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub cancels: CancelRegistry,
    /// The audit pipeline, when `[audit]` is configured.
    pub audit: Option<Arc<Audit>>,
    /// Approval requests, shared by every shard and the admin API.
    pub approvals: Arc<crate::approvals::Approvals>,
    /// To the main thread's lifecycle loop (admin-triggered reloads).
    pub lifecycle: std::sync::OnceLock<mpsc::Sender<Event>>,
    /// The SSH endpoint's counters (it runs beside the shards, not in them).
    pub ssh_metrics: Arc<crate::metrics::SshMetrics>,
    /// The web console's signed-in browsers and one-time links.
    pub console: crate::identity::sessions::Sessions,
}

impl Shared {
    /// Asks every shard for its metrics; shards that do not answer within a second
    /// (stuck or stopped) are left out rather than stalling the scrape.
    pub async fn scrape(&self) -> Vec<Snapshot> {
        let mut replies = Vec::with_capacity(self.controls.len());
        for c in &self.controls {
            let (tx, rx) = flume::bounded(1);
            if c.send(Control::Scrape(tx)).is_ok() {
                replies.push(rx);
            }
        }
        let mut out = Vec::with_capacity(replies.len());
        for rx in replies {
            let reply = monoio::time::timeout(std::time::Duration::from_secs(1), rx.recv_async());
            if let Ok(Ok(s)) = reply.await {
                out.push(s);
            }
        }
        out.sort_by_key(|s| s.shard);
        out
    }
}
