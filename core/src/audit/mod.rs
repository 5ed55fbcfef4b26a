//! The tamper-evident audit log.
//!
//! Every shard owns the producing half of a lock-free ring (`sluice_ring`) and
//! pushes encoded records
//! ([`record`]) into it; one writer thread ([`writer`]) drains all rings, chains
//! the records with SHA-256 ([`chain`]), appends them to segment files and fsyncs
//! once per batch. In `strict` durability no allowed command reaches a target,
//! and no result reaches a client, before the command's record is on disk
//! (reads on a session the server keeps read-only go upstream at once, their
//! results held); in `batched` a command is forwarded once its record is
//! enqueued. When records cannot be
//! written, shards refuse new commands (fail closed). [`verify`] holds the
//! `sluice audit` commands: verify, search, export, tail.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::SigningKey;
use sluice_config::Durability;

use crate::notify::Notify;

pub mod chain;
pub mod event;
pub mod record;
pub mod verify;
mod writer;

pub use event::Event;
pub use writer::{Anchor, Checkpoint, CheckpointSink};

/// A log's name outside it: the hex of its signing key's public half (a log
/// re-signed with another key is another log, with no anchors).
pub fn log_key(key: &ed25519_dalek::VerifyingKey) -> String {
    key.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the Unix epoch (record timestamps).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub dir: PathBuf,
    pub strict: bool,
    pub flush_interval: Duration,
    pub segment_bytes: u64,
    pub segment_age: Duration,
    pub retention_age: Option<Duration>,
    pub retention_bytes: Option<u64>,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    pub ring_bytes: usize,
    /// Where the last durable checkpoint is kept outside the log (beside the
    /// key): at start the log must still hold it.
    pub anchor_file: Option<PathBuf>,
}

impl Settings {
    pub fn from_config(a: &sluice_config::Audit) -> Settings {
        Settings {
            dir: PathBuf::from(&a.dir),
            strict: a.durability == Durability::Strict,
            flush_interval: a.flush_interval,
            segment_bytes: a.segment_bytes,
            segment_age: a.segment_age,
            retention_age: a.retention_age,
            retention_bytes: a.retention_bytes,
            checkpoint_every: a.checkpoint_every,
            checkpoint_interval: a.checkpoint_interval,
            ring_bytes: 4 << 20,
            anchor_file: None,
        }
    }

    fn strict_label(&self) -> &'static str {
        if self.strict {
            "strict"
        } else {
            "batched"
        }
    }
}

/// The running audit pipeline.
pub struct Audit {
    pub pipeline: Arc<writer::Pipeline>,
    pub strict: bool,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Where the signing key lives when `audit.signing_key` is not set: beside
/// the audit directory, never in it (`/var/log/sluice/audit` →
/// `/var/log/sluice/audit.signing.key`), so whoever can rewrite the log cannot
/// also re-sign it with the key found next to it.
pub fn default_key_path(dir: &Path) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "audit".into());
    name.push(".signing.key");
    dir.with_file_name(name)
}

/// Loads the signing key (`audit.signing_key`), or creates one on first start
/// at [`default_key_path`] (mode 0600), with its public half beside it
/// (`.pub`) and a copy in the audit directory (`signing.pub`). A key left in
/// the audit directory by an older Sluice is still used, with a warning.
pub fn signing_key(settings: &Settings, configured: Option<&str>) -> Result<SigningKey, String> {
    let path = key_path(settings, configured);
    load_or_create_key(settings, configured, path)
}

/// The signing key's path: the configured one, a legacy one in the log
/// directory (with a warning), or [`default_key_path`].
pub fn key_path(settings: &Settings, configured: Option<&str>) -> PathBuf {
    let legacy = settings.dir.join("signing.key");
    match configured {
        Some(p) => PathBuf::from(p),
        None if legacy.exists() && !default_key_path(&settings.dir).exists() => {
            crate::warn!(
                "audit_key_in_log_directory",
                key = legacy.display(),
                action = "move it out of the audit directory and set audit.signing_key: whoever can write the log can re-sign it with this key"
            );
            legacy
        }
        None => default_key_path(&settings.dir),
    }
}

fn load_or_create_key(
    settings: &Settings,
    configured: Option<&str>,
    path: PathBuf,
) -> Result<SigningKey, String> {
    let mut created = false;
    let key = if path.exists() {
        let pem = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| format!("{}: not an Ed25519 PKCS#8 key: {e}", path.display()))?
    } else if configured.is_some() {
        return Err(format!(
            "audit.signing_key {} does not exist",
            path.display()
        ));
    } else {
        std::fs::create_dir_all(&settings.dir)
            .map_err(|e| format!("{}: {e}", settings.dir.display()))?;
        let key = SigningKey::generate(&mut rand_core::OsRng);
        crate::info!("audit_key_created", key = path.display());
        created = true;
        let pem = key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| e.to_string())?;
        write_private(&path, pem.as_bytes())?;
        key
    };
    let public = key
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| e.to_string())?;
    // Beside the key (the copy to trust: `audit verify --pubkey`), and in the
    // log directory for convenience.
    // The copy beside the key only when the key was made here (a configured
    // key may sit on a read-only mount, beside someone else's `.pub`).
    let beside = created.then(|| path.with_extension("pub"));
    for pub_path in beside.into_iter().chain([settings.dir.join("signing.pub")]) {
        if pub_path == path {
            continue;
        }
        if std::fs::read_to_string(&pub_path).ok().as_deref() != Some(public.as_str()) {
            std::fs::create_dir_all(&settings.dir)
                .map_err(|e| format!("{}: {e}", settings.dir.display()))?;
            std::fs::write(&pub_path, &public)
                .map_err(|e| format!("{}: {e}", pub_path.display()))?;
        }
    }
    Ok(key)
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl Audit {
    /// Opens the log (recovering a torn tail) and starts the writer thread.
    /// Returns the pipeline and each shard's wake-up receiver.
    pub fn start(
        settings: Settings,
        shards: usize,
        key: SigningKey,
    ) -> Result<(Arc<Audit>, Vec<ShardLink>), String> {
        let (side_tx, side) = flume::unbounded();
        let (wake, wake_rx): (Vec<_>, Vec<_>) = (0..shards).map(|_| flume::bounded(1)).unzip();
        let (producers, consumers): (Vec<_>, Vec<_>) = (0..shards)
            .map(|_| sluice_ring::channel(settings.ring_bytes))
            .unzip();
        let pipeline = Arc::new(writer::Pipeline {
            wake,
            healthy: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            side,
            side_tx,
            written: AtomicU64::new(0),
            thread: std::sync::OnceLock::new(),
            anchor: std::sync::Mutex::new(None),
            on_checkpoint: std::sync::OnceLock::new(),
        });
        let strict = settings.strict;
        let w = writer::open(settings.clone(), pipeline.clone(), consumers, key)
            .map_err(|e| format!("audit log {}: {e}", settings.dir.display()))?;
        let handle = std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || w.run())
            .map_err(|e| e.to_string())?;
        let _ = pipeline.thread.set(handle.thread().clone());
        Ok((
            Arc::new(Audit {
                pipeline,
                strict,
                thread: std::sync::Mutex::new(Some(handle)),
            }),
            producers
                .into_iter()
                .zip(wake_rx)
                .map(|(ring, wake)| ShardLink { ring, wake })
                .collect(),
        ))
    }

    /// A record from outside the shards (reload, admin action); written in order.
    /// Has `sink` told of each checkpoint once it is durable (set once).
    pub fn on_checkpoint(&self, sink: CheckpointSink) {
        let _ = self.pipeline.on_checkpoint.set(sink);
    }

    pub fn side_record(&self, body: Vec<u8>) {
        let record = writer::SideRecord {
            body,
            durable: None,
        };
        let _ = self.pipeline.side_tx.send(record);
        self.pipeline.kick();
    }

    /// A record from outside the shards that a command waits for: the
    /// receiver hears once it is on disk (in any runtime: `recv_async`).
    /// `Err` when the log cannot be written (the command must not run).
    pub fn record_durable(&self, body: Vec<u8>) -> Result<flume::Receiver<()>, Unavailable> {
        if !self.pipeline.healthy.load(Ordering::Acquire) {
            return Err(Unavailable::Failing);
        }
        let (tx, rx) = flume::bounded(1);
        let record = writer::SideRecord {
            body,
            durable: Some(tx),
        };
        let _ = self.pipeline.side_tx.send(record);
        self.pipeline.kick();
        Ok(rx)
    }

    /// Strict durability: commands wait for their records to be on disk.
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// Drains every ring, writes the final checkpoint and waits for the writer.
    pub fn close(&self) {
        self.pipeline.stop.store(true, Ordering::Release);
        self.pipeline.kick();
        if let Some(h) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = h.join();
        }
    }
}

/// Why a command could not be recorded (so it must not run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The writer cannot write (disk full, read-only, ...).
    Failing,
    /// The ring stayed full, or durability was not reached in time.
    Backlogged,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unavailable::Failing => "the audit log cannot be written",
            Unavailable::Backlogged => "the audit log is not keeping up",
        })
    }
}

/// What a shard is handed once: its ring's producing half and its wake-up
/// ("more of your records are durable").
pub struct ShardLink {
    pub ring: sluice_ring::Producer,
    pub wake: flume::Receiver<()>,
}

/// One shard's side of the pipeline. Single-threaded: lives in its shard.
pub struct ShardAudit {
    audit: Arc<Audit>,
    ring: std::cell::RefCell<sluice_ring::Producer>,
    durable: Rc<Notify>,
    scratch: std::cell::RefCell<Vec<u8>>,
}

/// How long a command may wait for its record (ring space or fsync).
const WAIT_LIMIT: Duration = Duration::from_secs(5);

impl ShardAudit {
    pub fn new(audit: Arc<Audit>, link: ShardLink) -> Rc<ShardAudit> {
        let ShardLink { ring, wake } = link;
        let durable = Rc::new(Notify::default());
        let n = durable.clone();
        monoio::spawn(async move {
            while wake.recv_async().await.is_ok() {
                n.notify_all();
            }
        });
        Rc::new(ShardAudit {
            ring: std::cell::RefCell::new(ring),
            audit,
            durable,
            scratch: std::cell::RefCell::new(Vec::with_capacity(8192)),
        })
    }

    pub fn healthy(&self) -> bool {
        self.audit.pipeline.healthy.load(Ordering::Acquire)
    }

    /// Strict durability: commands wait for their records to be on disk.
    pub fn strict(&self) -> bool {
        self.audit.strict
    }

    /// Encodes and enqueues a record built by `build` (no allocation once warm).
    /// Returns a ticket to [`wait_durable`](Self::wait_durable) on. A full ring is
    /// retried for a while; then the command must be refused.
    pub async fn push(&self, build: impl FnOnce(&mut Vec<u8>)) -> Result<u64, Unavailable> {
        if !self.healthy() {
            return Err(Unavailable::Failing);
        }
        let first = {
            let mut buf = self.scratch.borrow_mut();
            build(&mut buf);
            self.ring.borrow_mut().push(&buf).ok_or_else(|| buf.clone())
        };
        if self.audit.strict {
            // A command is waiting for this record: wake the writer now.
            self.audit.pipeline.kick();
        }
        let pending = match first {
            Ok(ticket) => return Ok(ticket),
            // Slow path: the shared scratch may be reused while we wait.
            Err(owned) => owned,
        };
        let started = Instant::now();
        loop {
            if started.elapsed() > WAIT_LIMIT || !self.healthy() {
                return Err(if self.healthy() {
                    Unavailable::Backlogged
                } else {
                    Unavailable::Failing
                });
            }
            monoio::time::sleep(Duration::from_millis(2)).await;
            if let Some(t) = self.ring.borrow_mut().push(&pending) {
                self.audit.pipeline.kick();
                return Ok(t);
            }
        }
    }

    /// Records without waiting for the disk (session events, results).
    pub fn note(&self, build: impl FnOnce(&mut Vec<u8>)) {
        let mut buf = self.scratch.borrow_mut();
        build(&mut buf);
        // No wake-up: nothing waits on these; the writer picks them up within
        // its flush interval (waking it per record would cost a syscall each).
        let _ = self.ring.borrow_mut().push(&buf);
    }

    /// In strict durability, waits until the record with `ticket` is on disk.
    pub async fn wait_durable(&self, ticket: u64) -> Result<(), Unavailable> {
        if !self.audit.strict || self.ring.borrow().durable() >= ticket {
            return Ok(());
        }
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let notified = self.durable.notified();
            if self.ring.borrow().durable() >= ticket {
                return Ok(());
            }
            if !self.healthy() {
                return Err(Unavailable::Failing);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Unavailable::Backlogged);
            }
            let _ = monoio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
        }
    }
}
