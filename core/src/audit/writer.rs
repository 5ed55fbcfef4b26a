//! The audit writer: one thread drains every shard's ring, chains and encodes the
//! records, appends them to the current segment and fsyncs once per batch (group
//! commit), then tells each shard how far its records are durable.
//!
//! If a write or fsync fails (disk full, read-only) the batch is kept and retried,
//! `healthy` turns false and shards refuse new commands until it succeeds again.
//!
//! In `strict` durability the current segment is filled ahead of the records
//! with spaces (and that flushed once), so each batch overwrites blocks that
//! exist: `fdatasync` then writes the data alone, not the file's size too
//! (one device write instead of two). The fill is spaces, not zeros: JSON
//! whitespace, so the live file stays text to `grep`, `jq` and `tail`. The
//! log ends where the records end, found by content; a segment is cut back
//! to its records when it is closed or rotated. `batched` appends: nobody
//! waits on its flushes, and filling ahead would write every byte twice.

use std::os::unix::fs::FileExt;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
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

/// A record from outside the shards.
pub struct SideRecord {
    pub body: Vec<u8>,
    /// Told (once) when the record is on disk.
    pub durable: Option<flume::Sender<()>>,
}

/// What the writer thread, the shards and the lifecycle share.
pub struct Pipeline {
    /// One wake-up channel per shard: "more of your records are durable".
    pub wake: Vec<flume::Sender<()>>,
    pub healthy: AtomicBool,
    pub stop: AtomicBool,
    /// Records from outside the shards (reloads, admin actions, the SSH
    /// endpoint), each with whom to tell once it is durable.
    pub side: flume::Receiver<SideRecord>,
    pub side_tx: flume::Sender<SideRecord>,
    pub written: AtomicU64,
    pub thread: std::sync::OnceLock<std::thread::Thread>,
    /// The last durable checkpoint: its seq and the hash of its line, what
    /// `sluice audit verify --expect SEQ:HASH` checks a log against.
    pub anchor: std::sync::Mutex<Option<Anchor>>,
    /// Told of each checkpoint once it is durable (the shared store keeps it).
    pub on_checkpoint: std::sync::OnceLock<CheckpointSink>,
}

pub type CheckpointSink = Box<dyn Fn(&Checkpoint) + Send + Sync>;

/// A durable signed checkpoint, as it is anchored outside the log.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub anchor: Anchor,
    /// The checkpoint's signature (base64), as in its record.
    pub signature: String,
    pub at: u64,
    /// Which log: its signing key's public half ([`super::log_key`]).
    pub log_key: String,
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

impl Pipeline {
    /// Wakes the writer (cheap when it is already awake).
    pub fn kick(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

pub struct Writer {
    settings: Settings,
    pipeline: Arc<Pipeline>,
    /// Each shard's ring, drained in shard order.
    rings: Vec<Consumer>,
    key: SigningKey,
    file: File,
    path: PathBuf,
    /// Bytes of records in the current segment (where the next batch goes).
    size: u64,
    /// Bytes of the current segment that exist (records, then any fill).
    allocated: u64,
    opened: Instant,
    seq: u64,
    /// Hex SHA-256 of the last line written (or queued).
    prev: [u8; 64],
    since_checkpoint: u64,
    last_checkpoint: Instant,
    batch: Vec<u8>,
    pending_lines: u64,
    /// A checkpoint in `batch`, announced once it is durable.
    pending_anchor: Option<Checkpoint>,
}

/// Opens the log: recovers the chain from the newest segment, truncating a torn
/// tail left by a crash. A log that does not end with a checkpoint (the
/// gateway crashed, or was killed) is sealed at once: a `recovered` record
/// says where it stopped and how many torn bytes were dropped, and a signed
/// checkpoint follows it, so the log verifies again and says a crash happened.
pub fn open(
    settings: Settings,
    pipeline: Arc<Pipeline>,
    rings: Vec<Consumer>,
    key: SigningKey,
) -> std::io::Result<Writer> {
    std::fs::create_dir_all(&settings.dir)?;
    let mut seq = 0;
    let mut prev = GENESIS.to_owned();
    // `(last seq, torn bytes)` when the log did not end cleanly.
    let mut unclean: Option<(Option<u64>, u64)> = None;
    let mut segments = chain::segments(&settings.dir)?;
    // A segment holding no record (a crash right after a rotation, before
    // its first batch) is dropped: the chain goes on from the one before,
    // never from seq 0.
    while segments.len() > 1 {
        let last = &segments[segments.len() - 1];
        let (s, _, good, _, _) = scan_tail(last, &key)?;
        if s.is_some() || torn_bytes(last, good)? > 0 {
            break;
        }
        warn!("audit_empty_segment_removed", segment = last.display());
        std::fs::remove_file(last)?;
        segments.pop();
    }
    // The last checkpoint this gateway made durable, kept beside its key: a
    // log cut back or rewritten while the gateway was down no longer holds
    // it, and is not sealed over.
    if let Some(file) = &settings.anchor_file {
        if let Some(want) = read_anchor(file) {
            let found = line_hash(&segments, want.seq)?;
            if found.as_deref() != Some(want.hash.as_str()) {
                return Err(std::io::Error::other(format!(
                    "{}: the log no longer holds checkpoint {want} that this gateway wrote last ({}): it was cut back or rewritten while the gateway was down; run `sluice audit verify --expect {want}` and investigate before starting it again",
                    settings.dir.display(),
                    file.display()
                )));
            }
        }
    }
    let path = match segments.last() {
        Some(last) => {
            let (s, p, good_len, total, sealed) = scan_tail(last, &key)?;
            // The fill after the records is room made ahead, not torn bytes.
            let torn = torn_bytes(last, good_len)?;
            if !sealed || torn > 0 {
                unclean = Some((s, torn));
            }
            if torn > 0 {
                // Kept aside, not just cut: a record torn by a crash is
                // evidence too, and so is anything appended by hand.
                let kept = last.with_extension(format!("log.torn-{}", super::now_ms()));
                let mut f = File::open(last)?;
                f.seek(SeekFrom::Start(good_len))?;
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(f, torn), &mut bytes)?;
                std::fs::write(&kept, &bytes)?;
                warn!(
                    "audit_torn_tail",
                    segment = last.display(),
                    truncated_bytes = torn,
                    kept = kept.display(),
                    last_seq = s.map_or(-1, |s| s as i64)
                );
            }
            if good_len < total {
                let f = OpenOptions::new().write(true).open(last)?;
                f.set_len(good_len)?;
                f.sync_all()?;
            }
            if let Some(s) = s {
                seq = s.checked_add(1).ok_or_else(|| {
                    std::io::Error::other(format!(
                        "{}: seq {s} is the last there is",
                        last.display()
                    ))
                })?;
                prev = p;
            }
            last.clone()
        }
        None => settings.dir.join(chain::segment_name(0)),
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)?;
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
        pipeline,
        rings,
        key,
        file,
        path,
        size,
        allocated: size,
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

/// The anchor kept in `file`, if there is one that reads.
fn read_anchor(file: &Path) -> Option<Anchor> {
    let text = std::fs::read_to_string(file).ok()?;
    let (seq, hash) = text.trim().split_once(':')?;
    Some(Anchor {
        seq: seq.parse().ok()?,
        hash: hash.to_owned(),
    })
}

/// The hash of the record `seq` in the log, if the log holds it.
fn line_hash(segments: &[PathBuf], seq: u64) -> std::io::Result<Option<String>> {
    // The segment named for the last first-seq at or below `seq`.
    let Some(seg) = segments
        .iter()
        .rev()
        .find(|p| first_seq(p).is_some_and(|f| f <= seq))
    else {
        return Ok(None);
    };
    let reader = BufReader::new(File::open(seg)?);
    let prefix = format!("{{\"seq\":{seq},");
    for line in reader.split(b'\n') {
        let line = line?;
        if line.starts_with(prefix.as_bytes()) {
            return Ok(Some(chain::hash_hex(&line)));
        }
    }
    Ok(None)
}

/// The first seq a segment's name says it holds.
fn first_seq(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("audit-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Bytes after `good` up to the last one that is not fill: what a crash left
/// of a record being written (spaces are filled ahead; zeros, a file system
/// that lost the fill).
fn torn_bytes(path: &Path, good: u64) -> std::io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(good))?;
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut rest)?;
    Ok(rest
        .iter()
        .rposition(|&b| b != FILL && b != 0)
        .map_or(0, |p| p as u64 + 1))
}

/// Free bytes of the file system holding `file`.
fn free_bytes(file: &File) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid fd and a pointer to writable space for one statvfs.
    let rc = unsafe { libc::fstatvfs(file.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: fstatvfs succeeded, so it filled the struct.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail * st.f_frsize)
}

/// What a segment is filled ahead with, and how far at a time.
const FILL: u8 = b' ';
const FILL_AHEAD: u64 = 4 << 20;

/// The last complete record of a segment: `(seq, its hash, bytes of complete
/// lines, file size, whether it is a checkpoint)`. A last line without `\n` or
/// that does not parse is torn.
fn scan_tail(
    path: &Path,
    key: &SigningKey,
) -> std::io::Result<(Option<u64>, String, u64, u64, bool)> {
    let mut f = File::open(path)?;
    let total = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(f);
    let mut line = Vec::new();
    let (mut good, mut seq, mut hash) = (0u64, None::<u64>, GENESIS.to_owned());
    let mut sealed = true;
    // What the gateway seals must be what it wrote: the segment's records
    // chain and its checkpoints carry this key's signature, or the gateway
    // refuses to start (a log altered while it was down is not signed over).
    let altered = |at: u64, why: &str| {
        std::io::Error::other(format!(
            "{}: record seq {at} {why}: the log was altered while the gateway was down; run `sluice audit verify` and investigate before starting it again",
            path.display()
        ))
    };
    let verifying = key.verifying_key();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        // A record starts with `{` (a line of fill before it is not one).
        if n == 0 || line.last() != Some(&b'\n') || line.first() != Some(&b'{') {
            break;
        }
        let body = &line[..line.len() - 1];
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            break;
        };
        let Some(s) = v.get("seq").and_then(|s| s.as_u64()) else {
            break;
        };
        if let Some(last) = seq {
            if Some(s) != last.checked_add(1) {
                return Err(altered(s, &format!("follows seq {last}")));
            }
            if v.get("prev").and_then(|p| p.as_str()) != Some(hash.as_str()) {
                return Err(altered(s, "does not chain to the record before it"));
            }
        }
        if v.get("type").and_then(|t| t.as_str()) == Some("checkpoint") {
            let ts = v.get("ts").and_then(|t| t.as_u64()).unwrap_or(0);
            let records = v.get("records").and_then(|r| r.as_u64()).unwrap_or(0);
            let prev = v.get("prev").and_then(|p| p.as_str()).unwrap_or("");
            let sig = v.get("sig").and_then(|p| p.as_str()).unwrap_or("");
            let signed = base64::engine::general_purpose::STANDARD
                .decode(sig)
                .ok()
                .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
                .is_some_and(|sig| {
                    chain::checkpoint_line(s, prev, ts, records, sig_text(&v)) == body
                        && ed25519_dalek::Verifier::verify(
                            &verifying,
                            chain::checkpoint_message(s, prev, ts, records).as_bytes(),
                            &sig,
                        )
                        .is_ok()
                });
            if !signed {
                return Err(altered(s, "is a checkpoint this key did not sign"));
            }
        }
        seq = Some(s);
        hash = chain::hash_hex(body);
        good += n as u64;
        sealed = v.get("type").and_then(|t| t.as_str()) == Some("checkpoint");
    }
    Ok((seq, hash, good, total, sealed))
}

fn sig_text(v: &serde_json::Value) -> &str {
    v.get("sig").and_then(|p| p.as_str()).unwrap_or("")
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
        self.pending_anchor = Some(Checkpoint {
            anchor: Anchor {
                seq: self.seq - 1,
                hash: String::from_utf8_lossy(&self.prev).into_owned(),
            },
            signature: sig,
            at: ts,
            log_key: super::log_key(&self.key.verifying_key()),
        });
    }

    /// A checkpoint just became durable: logged (operators keep the last one
    /// to check the log against, `sluice audit verify --expect`) and kept for
    /// the admin API.
    fn announce_anchor(&mut self) {
        let Some(checkpoint) = self.pending_anchor.take() else {
            return;
        };
        if let Some(sink) = self.pipeline.on_checkpoint.get() {
            sink(&checkpoint);
        }
        let anchor = checkpoint.anchor;
        info!("audit_checkpoint", anchor = anchor);
        if let Some(file) = &self.settings.anchor_file {
            if let Err(e) = std::fs::write(file, format!("{anchor}\n")) {
                warn!("audit_anchor_not_kept", file = file.display(), error = e);
            }
        }
        if let Ok(mut a) = self.pipeline.anchor.lock() {
            *a = Some(anchor);
        }
    }

    /// Writes and fsyncs the batch. On failure the batch is kept for a retry.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let end = self.size + self.batch.len() as u64;
        // Only where a command waits for the flush: filling ahead writes
        // every byte twice, which `batched` (one flush per interval, no
        // one waiting on it) would pay in throughput for nothing.
        if self.settings.strict && end > self.allocated {
            self.fill_ahead(end)?;
        }
        self.file.write_all_at(&self.batch, self.size)?;
        self.file.sync_data()?;
        self.size = end;
        self.allocated = self.allocated.max(end);
        self.pipeline
            .written
            .fetch_add(self.pending_lines, Ordering::Relaxed);
        self.batch.clear();
        self.pending_lines = 0;
        Ok(())
    }

    /// Fills the segment to past `end` (4 MiB at a time, or the segment's size
    /// when smaller, at least 64 KiB) and flushes that with its new size, once,
    /// so the batches
    /// written over it are data-only flushes. Short of space for a step, it
    /// fills to `end` alone (the batch still goes to disk if it fits).
    fn fill_ahead(&mut self, end: u64) -> std::io::Result<()> {
        let step = FILL_AHEAD.min(self.settings.segment_bytes.max(1 << 16));
        let target = end.div_ceil(step) * step;
        // Only with room to spare: on a nearly full disk the fill would take
        // the last free space from whatever frees it for the log.
        if free_bytes(&self.file).is_some_and(|free| free > 4 * step)
            && self.fill_to(target).is_ok()
        {
            return Ok(());
        }
        self.fill_to(end)
    }

    fn fill_to(&mut self, target: u64) -> std::io::Result<()> {
        let fill = vec![FILL; (1 << 20).min(target.saturating_sub(self.allocated)) as usize];
        let mut at = self.allocated;
        while at < target {
            let n = fill.len().min((target - at) as usize);
            self.file.write_all_at(&fill[..n], at)?;
            at += n as u64;
        }
        self.file.sync_all()?;
        self.allocated = self.allocated.max(target);
        Ok(())
    }

    /// Cuts the segment back to its records (a closed segment holds no fill),
    /// by the file's own length: a fill that failed part way left more.
    fn trim(&mut self) -> std::io::Result<()> {
        if self.file.metadata()?.len() > self.size {
            self.file.set_len(self.size)?;
            self.file.sync_all()?;
            self.allocated = self.size;
        }
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
        self.trim()?;
        // A new name, never an old segment's: written by offset from 0.
        self.file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)?;
        self.path = path;
        self.size = 0;
        self.allocated = 0;
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
            // Recordings go with the segment that vouches for them (once
            // it is gone: a segment that stays still vouches for them).
            let recordings = self.recordings_in(p);
            if std::fs::remove_file(p).is_ok() {
                for path in recordings {
                    if std::fs::remove_file(&path).is_ok() {
                        info!(
                            "recording_removed",
                            file = path.display(),
                            reason = "retention"
                        );
                    }
                }
                total -= len;
                info!(
                    "audit_segment_removed",
                    segment = p.display(),
                    reason = if too_old { "age" } else { "size" }
                );
            }
        }
    }

    /// The session recordings sealed in `segment` (its `recording` records),
    /// as files in `DIR/sessions/` whatever a record says. Not the ones it
    /// only saw start: a later segment may seal them, or they are still
    /// being written.
    fn recordings_in(&self, segment: &Path) -> Vec<PathBuf> {
        let Ok(file) = File::open(segment) else {
            return Vec::new();
        };
        let sessions = self.settings.dir.join("sessions");
        let mut found = Vec::new();
        for line in BufReader::new(file).split(b'\n').map_while(Result::ok) {
            if memchr::memmem::find(&line, br#","type":"recording","#).is_none() {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            let name = v
                .get("file")
                .and_then(serde_json::Value::as_str)
                .and_then(|f| Path::new(f).file_name().map(|n| n.to_owned()));
            if let Some(name) = name {
                found.push(sessions.join(name));
            }
        }
        found
    }

    /// The writer thread's loop; returns after a clean drain when `stop` is set.
    pub fn run(mut self) {
        let mut scratch = Vec::with_capacity(8192);
        let mut drained: Vec<u64> = vec![0; self.rings.len()];
        // Side records waiting for the flush that makes them durable.
        let mut acks: Vec<flume::Sender<()>> = Vec::new();
        let mut backoff = Duration::from_millis(50);
        loop {
            let stopping = self.pipeline.stop.load(Ordering::Acquire);
            // Take new records only while the disk accepts them: a failing disk
            // must fill the rings so shards refuse commands (fail closed).
            if self.batch.is_empty() {
                let mut rings = std::mem::take(&mut self.rings);
                for (i, ring) in rings.iter_mut().enumerate() {
                    drained[i] = ring.drain(|r| self.append(r), &mut scratch);
                }
                self.rings = rings;
                while let Ok(side) = self.pipeline.side.try_recv() {
                    self.append(&side.body);
                    acks.extend(side.durable);
                }
                let due = self.since_checkpoint >= self.settings.checkpoint_every
                    || (self.since_checkpoint > 0
                        && self.last_checkpoint.elapsed() >= self.settings.checkpoint_interval);
                let empty =
                    self.rings.iter().all(|r| r.pending() == 0) && self.pipeline.side.is_empty();
                if due || (stopping && empty && self.since_checkpoint > 0) {
                    self.checkpoint();
                }
            }
            match self.flush().and_then(|_| self.rotate_if_due()) {
                Ok(()) => {
                    self.announce_anchor();
                    if !self.pipeline.healthy.swap(true, Ordering::AcqRel) {
                        info!("audit_recovered", dir = self.settings.dir.display());
                    }
                    backoff = Duration::from_millis(50);
                    for ack in acks.drain(..) {
                        let _ = ack.send(());
                    }
                    for (i, ring) in self.rings.iter().enumerate() {
                        if drained[i] > ring.durable() {
                            ring.set_durable(drained[i]);
                            let _ = self.pipeline.wake[i].try_send(());
                        }
                    }
                }
                Err(e) => {
                    if self.pipeline.healthy.swap(false, Ordering::AcqRel) {
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
                        && self.pipeline.stop.load(Ordering::Acquire)
                    {
                        // Still failing while stopping: keep trying a little, then give up loudly.
                        error!("audit_unflushed_at_exit", records = self.pending_lines);
                        return;
                    }
                    continue;
                }
            }
            let empty =
                self.rings.iter().all(|r| r.pending() == 0) && self.pipeline.side.is_empty();
            if stopping && empty && self.batch.is_empty() {
                if let Err(e) = self.trim() {
                    warn!("audit_trim_failed", error = e);
                }
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
