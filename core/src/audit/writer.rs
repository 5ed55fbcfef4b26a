//! The audit writer: one thread drains every shard's ring, chains and encodes the
//! records, appends them to the current segment and fsyncs once per batch (group
//! commit), then tells each shard how far its records are durable.
//!
//! If a write or fsync fails (disk full, read-only) the batch is kept and retried,
//! `healthy` turns false and shards refuse new commands until it succeeds again.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};

use super::chain::{self, GENESIS};
use super::Settings;
use crate::{error, info, warn};
use sluice_ring::Consumer;

/// Shared between the writer thread, the shards and the lifecycle.
pub struct Shared {
    /// One wake-up channel per shard: "more of your records are durable".
    pub wake: Vec<flume::Sender<()>>,
    pub healthy: AtomicBool,
    pub stop: AtomicBool,
    /// Records from outside the shards (reloads, admin actions).
    pub side: flume::Receiver<Vec<u8>>,
    pub side_tx: flume::Sender<Vec<u8>>,
    pub written: AtomicU64,
    pub thread: std::sync::OnceLock<std::thread::Thread>,
    /// The last durable checkpoint: its seq and the hash of its line, what
    /// `sluice audit verify --expect SEQ:HASH` checks a log against.
    pub anchor: std::sync::Mutex<Option<Anchor>>,
}

/// A checkpoint's place in the chain: `SEQ:HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl Shared {
    /// Wakes the writer (cheap when it is already awake).
    pub fn kick(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

pub struct Writer {
    settings: Settings,
    shared: Arc<Shared>,
    /// Each shard's ring, drained in shard order.
    rings: Vec<Consumer>,
    key: SigningKey,
    file: File,
    path: PathBuf,
    size: u64,
    opened: Instant,
    seq: u64,
    /// Hex SHA-256 of the last line written (or queued).
    prev: [u8; 64],
    since_checkpoint: u64,
    last_checkpoint: Instant,
    batch: Vec<u8>,
    pending_lines: u64,
    /// A checkpoint in `batch`, announced once it is durable.
    pending_anchor: Option<Anchor>,
}

/// Opens the log: recovers the chain from the newest segment, truncating a torn
/// tail left by a crash. A log that does not end with a checkpoint (the
/// gateway crashed, or was killed) is sealed at once: a `recovered` record
/// says where it stopped and how many torn bytes were dropped, and a signed
/// checkpoint follows it, so the log verifies again and says a crash happened.
pub fn open(
    settings: Settings,
    shared: Arc<Shared>,
    rings: Vec<Consumer>,
    key: SigningKey,
) -> std::io::Result<Writer> {
    std::fs::create_dir_all(&settings.dir)?;
    let mut seq = 0;
    let mut prev = GENESIS.to_owned();
    // `(last seq, torn bytes)` when the log did not end cleanly.
    let mut unclean: Option<(Option<u64>, u64)> = None;
    let segments = chain::segments(&settings.dir)?;
    let path = match segments.last() {
        Some(last) => {
            let (s, p, good_len, total, sealed) = scan_tail(last)?;
            if !sealed || good_len < total {
                unclean = Some((s, total - good_len));
            }
            if good_len < total {
                warn!(
                    "audit_torn_tail",
                    segment = last.display(),
                    truncated_bytes = total - good_len,
                    last_seq = s.map_or(-1, |s| s as i64)
                );
                let f = OpenOptions::new().write(true).open(last)?;
                f.set_len(good_len)?;
                f.sync_all()?;
            }
            if let Some(s) = s {
                seq = s + 1;
                prev = p;
            }
            last.clone()
        }
        None => settings.dir.join(chain::segment_name(0)),
    };
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    let size = file.metadata()?.len();
    info!(
        "audit_opened",
        dir = settings.dir.display(),
        next_seq = seq,
        durability = settings.strict_label()
    );
    let mut prev_hex = [0u8; 64];
    prev_hex.copy_from_slice(prev.as_bytes());
    let mut w = Writer {
        settings,
        shared,
        rings,
        key,
        file,
        path,
        size,
        opened: Instant::now(),
        seq,
        prev: prev_hex,
        since_checkpoint: 0,
        last_checkpoint: Instant::now(),
        batch: Vec::with_capacity(1 << 20),
        pending_lines: 0,
        pending_anchor: None,
    };
    if let Some((last, torn)) = unclean {
        let mut body = Vec::with_capacity(128);
        let rec = super::record::Rec::begin(&mut body, "recovered", super::now_ms())
            .num("torn_bytes", torn)
            .str(
                "reason",
                "the log did not end with a checkpoint: the gateway stopped without closing it",
            );
        match last {
            Some(s) => rec.num("last_seq", s).end(),
            None => rec.end(),
        }
        w.append(&body);
        w.checkpoint();
        w.flush()?;
        w.announce_anchor();
        warn!(
            "audit_sealed_after_crash",
            last_seq = last.map_or(-1, |s| s as i64),
            torn_bytes = torn,
            recovered_seq = w.seq - 2
        );
    }
    Ok(w)
}

/// The last complete record of a segment: `(seq, its hash, bytes of complete
/// lines, file size, whether it is a checkpoint)`. A last line without `\n` or
/// that does not parse is torn.
fn scan_tail(path: &Path) -> std::io::Result<(Option<u64>, String, u64, u64, bool)> {
    let mut f = File::open(path)?;
    let total = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(f);
    let mut line = Vec::new();
    let (mut good, mut seq, mut hash) = (0u64, None, GENESIS.to_owned());
    let mut sealed = true;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        let body = &line[..line.len() - 1];
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            break;
        };
        let Some(s) = v.get("seq").and_then(|s| s.as_u64()) else {
            break;
        };
        seq = Some(s);
        hash = chain::hash_hex(body);
        good += n as u64;
        sealed = v.get("type").and_then(|t| t.as_str()) == Some("checkpoint");
    }
    Ok((seq, hash, good, total, sealed))
}

impl Writer {
    fn append(&mut self, body: &[u8]) {
        let start = self.batch.len();
        chain::line(self.seq, &self.prev, body, &mut self.batch);
        chain::hash_hex_into(&self.batch[start..], &mut self.prev);
        self.batch.push(b'\n');
        self.seq += 1;
        self.pending_lines += 1;
        self.since_checkpoint += 1;
    }

    fn checkpoint(&mut self) {
        let ts = super::now_ms();
        let prev = std::str::from_utf8(&self.prev).unwrap_or(GENESIS);
        let msg = chain::checkpoint_message(self.seq, prev, ts, self.since_checkpoint);
        let sig = base64::engine::general_purpose::STANDARD
            .encode(self.key.sign(msg.as_bytes()).to_bytes());
        let mut body = Vec::with_capacity(256);
        super::record::Rec::begin(&mut body, "checkpoint", ts)
            .num("records", self.since_checkpoint)
            .str("sig", &sig)
            .end();
        self.append(&body);
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.pending_anchor = Some(Anchor {
            seq: self.seq - 1,
            hash: String::from_utf8_lossy(&self.prev).into_owned(),
        });
    }

    /// A checkpoint just became durable: logged (operators keep the last one
    /// to check the log against, `sluice audit verify --expect`) and kept for
    /// the admin API.
    fn announce_anchor(&mut self) {
        let Some(anchor) = self.pending_anchor.take() else {
            return;
        };
        info!("audit_checkpoint", anchor = anchor);
        if let Ok(mut a) = self.shared.anchor.lock() {
            *a = Some(anchor);
        }
    }

    /// Writes and fsyncs the batch. On failure the batch is kept for a retry.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.batch)?;
        self.file.sync_data()?;
        self.size += self.batch.len() as u64;
        self.shared
            .written
            .fetch_add(self.pending_lines, Ordering::Relaxed);
        self.batch.clear();
        self.pending_lines = 0;
        Ok(())
    }

    fn rotate_if_due(&mut self) -> std::io::Result<()> {
        let s = &self.settings;
        if self.size < s.segment_bytes && self.opened.elapsed() < s.segment_age {
            return Ok(());
        }
        if self.size == 0 {
            return Ok(());
        }
        let path = s.dir.join(chain::segment_name(self.seq));
        self.file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.path = path;
        self.size = 0;
        self.opened = Instant::now();
        self.apply_retention();
        Ok(())
    }

    /// Removes the oldest segments beyond the retention limits (never the current).
    fn apply_retention(&self) {
        let Ok(segments) = chain::segments(&self.settings.dir) else {
            return;
        };
        let mut total: u64 = segments
            .iter()
            .filter_map(|p| p.metadata().ok())
            .map(|m| m.len())
            .sum();
        for p in &segments[..segments.len().saturating_sub(1)] {
            let meta = p.metadata().ok();
            let too_old = self.settings.retention_age.is_some_and(|age| {
                meta.as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|e| e > age)
            });
            let too_big = self.settings.retention_bytes.is_some_and(|max| total > max);
            if !(too_old || too_big) {
                break;
            }
            let len = meta.map_or(0, |m| m.len());
            if std::fs::remove_file(p).is_ok() {
                total -= len;
                info!(
                    "audit_segment_removed",
                    segment = p.display(),
                    reason = if too_old { "age" } else { "size" }
                );
            }
        }
    }

    /// The writer thread's loop; returns after a clean drain when `stop` is set.
    pub fn run(mut self) {
        let mut scratch = Vec::with_capacity(8192);
        let mut drained: Vec<u64> = vec![0; self.rings.len()];
        let mut backoff = Duration::from_millis(50);
        loop {
            let stopping = self.shared.stop.load(Ordering::Acquire);
            // Take new records only while the disk accepts them: a failing disk
            // must fill the rings so shards refuse commands (fail closed).
            if self.batch.is_empty() {
                let mut rings = std::mem::take(&mut self.rings);
                for (i, ring) in rings.iter_mut().enumerate() {
                    drained[i] = ring.drain(|r| self.append(r), &mut scratch);
                }
                self.rings = rings;
                while let Ok(body) = self.shared.side.try_recv() {
                    self.append(&body);
                }
                let due = self.since_checkpoint >= self.settings.checkpoint_every
                    || (self.since_checkpoint > 0
                        && self.last_checkpoint.elapsed() >= self.settings.checkpoint_interval);
                let empty =
                    self.rings.iter().all(|r| r.pending() == 0) && self.shared.side.is_empty();
                if due || (stopping && empty && self.since_checkpoint > 0) {
                    self.checkpoint();
                }
            }
            match self.flush().and_then(|_| self.rotate_if_due()) {
                Ok(()) => {
                    self.announce_anchor();
                    if !self.shared.healthy.swap(true, Ordering::AcqRel) {
                        info!("audit_recovered", dir = self.settings.dir.display());
                    }
                    backoff = Duration::from_millis(50);
                    for (i, ring) in self.rings.iter().enumerate() {
                        if drained[i] > ring.durable() {
                            ring.set_durable(drained[i]);
                            let _ = self.shared.wake[i].try_send(());
                        }
                    }
                }
                Err(e) => {
                    if self.shared.healthy.swap(false, Ordering::AcqRel) {
                        error!(
                            "audit_write_failed",
                            dir = self.settings.dir.display(),
                            error = e,
                            action = "refusing new commands until the log can be written"
                        );
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    if stopping
                        && backoff >= Duration::from_secs(1)
                        && self.shared.stop.load(Ordering::Acquire)
                    {
                        // Still failing while stopping: keep trying a little, then give up loudly.
                        error!("audit_unflushed_at_exit", records = self.pending_lines);
                        return;
                    }
                    continue;
                }
            }
            let empty = self.rings.iter().all(|r| r.pending() == 0) && self.shared.side.is_empty();
            if stopping && empty && self.batch.is_empty() {
                info!("audit_closed", last_seq = self.seq.saturating_sub(1));
                return;
            }
            // Group commit: wait for more records (or a strict command's kick)
            // instead of paying an fsync per trickle of records.
            if !stopping {
                std::thread::park_timeout(self.settings.flush_interval);
            }
        }
    }
}
