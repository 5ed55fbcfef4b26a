//! `sluice audit verify | search | export | tail`: reading the log.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::Value;

use super::chain::{self, GENESIS};

/// The outcome of a verification.
#[derive(Debug, Default)]
pub struct Report {
    pub records: u64,
    pub checkpoints: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Where the gateway stopped without closing the log: the `recovered`
    /// record's place (`segment:line`) and seq, and the last seq before it.
    pub crashes: Vec<(String, u64, Option<u64>)>,
    /// The anchor given was found and matched.
    pub anchored: bool,
    /// Session recordings whose size and SHA-256 matched their records.
    pub recordings: u64,
    /// Recordings started (`recording_start`) and never sealed: the gateway
    /// stopped during the session, so nothing vouches for their content.
    pub unsealed: Vec<String>,
}

impl Report {
    /// What a verification found, as `sluice audit verify` and the console
    /// say it after "ok: ".
    pub fn summary(&self) -> String {
        format!(
            "{} records (seq {}..={}), {} signed checkpoints, {} session recordings, chain intact",
            self.records,
            self.first_seq.unwrap_or(0),
            self.last_seq.unwrap_or(0),
            self.checkpoints,
            self.recordings
        )
    }
}

/// A checkpoint the log must still hold (`SEQ:HASH`, as the gateway logs it at
/// each checkpoint and the admin API serves it): a log cut back to an earlier
/// checkpoint, or rewritten and re-signed, fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub seq: u64,
    pub hash: String,
}

impl std::str::FromStr for Expect {
    type Err = String;
    fn from_str(s: &str) -> Result<Expect, String> {
        let (seq, hash) = s
            .split_once(':')
            .ok_or("expected SEQ:HASH (as the gateway logs it at each checkpoint)")?;
        let seq = seq
            .parse()
            .map_err(|_| format!("`{seq}` is not a sequence number"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{hash}` is not a SHA-256 in hex"));
        }
        Ok(Expect {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

/// Loads the public key from `--pubkey`; else the one beside the default
/// key, outside the log directory (`DIR.signing.pub`), which counts as kept
/// elsewhere; else `DIR/signing.pub` (`false`: whoever can rewrite the log
/// can replace it too).
pub fn load_pubkey(dir: &Path, pubkey: Option<&Path>) -> Result<(VerifyingKey, bool), String> {
    let beside = super::default_key_path(dir).with_extension("pub");
    let (path, explicit) = match pubkey {
        Some(p) => (p.to_path_buf(), true),
        None if beside.exists() => (beside, true),
        None => (dir.join("signing.pub"), false),
    };
    let pem = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let key = VerifyingKey::from_public_key_pem(&pem)
        .map_err(|e| format!("{}: not an Ed25519 public key: {e}", path.display()))?;
    Ok((key, explicit))
}

/// Checks the whole chain. `Err` names the first bad record.
pub fn verify(
    dir: &Path,
    key: &VerifyingKey,
    allow_open_tail: bool,
    expect: Option<&Expect>,
) -> Result<Report, String> {
    let segments = chain::segments(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if segments.is_empty() {
        return Err(format!("{}: no audit segments", dir.display()));
    }
    let mut r = Report::default();
    let mut prev_hash: Option<String> = None;
    let mut prev_seq: Option<u64> = None;
    let mut last_type = String::new();
    let mut last_at = String::new();
    let mut started: Vec<String> = Vec::new();
    for seg in &segments {
        let name = seg
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_owned();
        let mut data = Vec::new();
        std::fs::File::open(seg)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| format!("{name}: {e}"))?;
        let mut line_no = 0;
        let mut rest = &data[..];
        while !rest.is_empty() {
            line_no += 1;
            let at = format!("{name}:{line_no}");
            // Spaces after the records: room the writer filled ahead.
            if rest.iter().all(|&b| b == b' ' || b == 0) {
                break;
            }
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                return Err(format!(
                    "{at}: torn record (no end of line): the file was truncated"
                ));
            };
            let line = &rest[..nl];
            rest = &rest[nl + 1..];
            let v: Value = serde_json::from_slice(line)
                .map_err(|e| format!("{at}: record is not valid JSON ({e}): altered"))?;
            let seq = v
                .get("seq")
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("{at}: record has no seq: altered"))?;
            let prev = v
                .get("prev")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}: record seq {seq} has no prev: altered"))?;
            match (prev_seq, &prev_hash) {
                (Some(ps), Some(ph)) => {
                    if seq != ps + 1 {
                        return Err(format!(
                            "{at}: record seq {seq} follows seq {ps}: a record was deleted, reordered or inserted"
                        ));
                    }
                    if prev != ph {
                        return Err(format!(
                            "{at}: record seq {seq} does not chain to seq {ps}: record seq {ps} was altered, or records were removed or reordered"
                        ));
                    }
                }
                _ => {
                    if prev != GENESIS && seq != 0 {
                        // Older segments were removed by retention: the chain is
                        // anchored at its first remaining record.
                    } else if prev != GENESIS {
                        return Err(format!(
                            "{at}: first record seq 0 does not start the chain: altered"
                        ));
                    }
                    r.first_seq = Some(seq);
                }
            }
            let kind = v
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if kind == "checkpoint" {
                let bad = || format!("{at}: checkpoint seq {seq} is malformed: altered");
                let ts = v.get("ts").and_then(Value::as_u64).ok_or_else(bad)?;
                let records = v.get("records").and_then(Value::as_u64).ok_or_else(bad)?;
                let sig_text = v.get("sig").and_then(Value::as_str).ok_or_else(bad)?;
                if chain::checkpoint_line(seq, prev, ts, records, sig_text) != line {
                    return Err(bad());
                }
                let sig = base64::engine::general_purpose::STANDARD
                    .decode(sig_text)
                    .ok()
                    .and_then(|b| Signature::from_slice(&b).ok())
                    .ok_or_else(|| {
                        format!("{at}: checkpoint seq {seq} has no valid signature: altered")
                    })?;
                key.verify(
                    chain::checkpoint_message(seq, prev, ts, records).as_bytes(),
                    &sig,
                )
                .map_err(|_| {
                    format!(
                        "{at}: checkpoint seq {seq}: signature does not verify: forged or altered"
                    )
                })?;
                r.checkpoints += 1;
            }
            if kind == "recording" {
                check_recording(dir, &v).map_err(|e| format!("{at}: record seq {seq}: {e}"))?;
                r.recordings += 1;
            }
            if kind == "recording_start" || kind == "recording" {
                let file = v.get("file").and_then(Value::as_str).unwrap_or_default();
                match kind.as_str() {
                    "recording" => started.retain(|f| f != file),
                    _ => started.push(file.to_owned()),
                }
            }
            if kind == "recovered" {
                r.crashes
                    .push((at.clone(), seq, v.get("last_seq").and_then(Value::as_u64)));
            }
            let hash = chain::hash_hex(line);
            if let Some(e) = expect.filter(|e| e.seq == seq) {
                if hash != e.hash {
                    return Err(format!(
                        "{at}: record seq {seq} is not the expected checkpoint {}:{}: the log was rewritten (and re-signed)",
                        e.seq, e.hash
                    ));
                }
                r.anchored = true;
            }
            prev_hash = Some(hash);
            prev_seq = Some(seq);
            r.records += 1;
            last_type = kind;
            last_at = at;
        }
    }
    r.last_seq = prev_seq;
    if let Some(e) = expect {
        if !r.anchored && r.first_seq.is_none_or(|first| first <= e.seq) {
            return Err(format!(
                "the log ends at seq {}, before the expected checkpoint seq {}: it was cut back (truncated)",
                prev_seq.map_or("-".to_owned(), |s| s.to_string()),
                e.seq
            ));
        }
    }
    if r.records == 0 {
        // A gateway that never recorded anything (the log is created at start).
        return Ok(r);
    }
    if last_type != "checkpoint" && !allow_open_tail {
        return Err(format!(
            "{last_at}: the log ends at seq {} without a signed checkpoint: it was truncated or altered (or the gateway is still running or crashed; use --allow-open-tail)",
            prev_seq.unwrap_or(0)
        ));
    }
    r.unsealed = started;
    Ok(r)
}

/// A session recording named by a `recording` record must still be the file
/// that was recorded: same size, same SHA-256. It is looked for where it was
/// written, else in `DIR/sessions/` (a log directory moved elsewhere).
fn check_recording(dir: &Path, v: &Value) -> Result<(), String> {
    let bad = || "malformed recording record: altered".to_owned();
    let file = v.get("file").and_then(Value::as_str).ok_or_else(bad)?;
    let bytes = v.get("bytes").and_then(Value::as_u64).ok_or_else(bad)?;
    let sha = v.get("sha256").and_then(Value::as_str).ok_or_else(bad)?;
    let written = Path::new(file);
    let path = if written.exists() {
        written.to_path_buf()
    } else {
        dir.join("sessions")
            .join(written.file_name().ok_or_else(bad)?)
    };
    let data = std::fs::read(&path).map_err(|e| {
        format!(
            "the recording {} cannot be read ({e}): removed",
            path.display()
        )
    })?;
    let actual = chain::hash_hex(&data);
    if data.len() as u64 != bytes || actual != sha {
        return Err(format!(
            "the recording {} is not the one recorded (size or SHA-256 differs): altered",
            path.display()
        ));
    }
    Ok(())
}

/// Search filters; all given ones must match.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub user: Option<String>,
    pub target: Option<String>,
    pub kind: Option<String>,
    pub decision: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub text: Option<String>,
    pub record_type: Option<String>,
}

impl Filter {
    /// Cheap byte-level prefilter: a record that cannot match is skipped without
    /// parsing (this is what makes search run at disk speed).
    fn prefilter(&self, line: &[u8], finders: &[memchr::memmem::Finder<'_>]) -> bool {
        finders.iter().all(|f| f.find(line).is_some())
    }

    fn matches(&self, v: &Value) -> bool {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        if self
            .user
            .as_deref()
            .is_some_and(|u| s("subject") != Some(u))
        {
            return false;
        }
        if self
            .target
            .as_deref()
            .is_some_and(|t| s("target") != Some(t))
        {
            return false;
        }
        if self
            .decision
            .as_deref()
            .is_some_and(|d| s("decision") != Some(d))
        {
            return false;
        }
        if let Some(wanted) = self.record_type.as_deref() {
            // `session`: a session's start, end and recording records.
            let t = s("type").unwrap_or_default();
            let session = matches!(t, "session_start" | "session_end" | "recording");
            if t != wanted && !(wanted == "session" && session) {
                return false;
            }
        }
        if let Some(k) = &self.kind {
            let kinds = v.get("kinds").and_then(Value::as_array);
            if !kinds.is_some_and(|ks| ks.iter().any(|x| x.as_str() == Some(k))) {
                return false;
            }
        }
        let ts = v.get("ts").and_then(Value::as_u64).unwrap_or(0);
        if self.since_ms.is_some_and(|t| ts < t) || self.until_ms.is_some_and(|t| ts > t) {
            return false;
        }
        if let Some(t) = &self.text {
            if !s("text").is_some_and(|x| x.contains(t.as_str())) {
                return false;
            }
        }
        true
    }
}

/// Calls `each` with every matching record line, in log order.
pub fn search(dir: &Path, f: &Filter, mut each: impl FnMut(&[u8], &Value)) -> Result<u64, String> {
    let mut needles: Vec<String> = Vec::new();
    if let Some(u) = &f.user {
        needles.push(u.clone());
    }
    if let Some(t) = &f.target {
        needles.push(t.clone());
    }
    if let Some(k) = &f.kind {
        needles.push(format!("\"{k}\""));
    }
    if let Some(d) = &f.decision {
        needles.push(format!("\"decision\":\"{d}\""));
    }
    let finders: Vec<_> = needles
        .iter()
        .map(|n| memchr::memmem::Finder::new(n.as_bytes()))
        .collect();
    let mut n = 0;
    for seg in chain::segments(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let mut data = Vec::new();
        std::fs::File::open(&seg)
            .and_then(|mut file| file.read_to_end(&mut data))
            .map_err(|e| format!("{}: {e}", seg.display()))?;
        for line in data.split(|&b| b == b'\n') {
            if line.is_empty() || !f.prefilter(line, &finders) {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if f.matches(&v) {
                each(line, &v);
                n += 1;
            }
        }
    }
    Ok(n)
}

/// [`search`] over several logs (one per instance), merged by record time
/// (stable: records of one log keep their order); `each` is told which log.
pub fn search_logs(
    dirs: &[std::path::PathBuf],
    f: &Filter,
    mut each: impl FnMut(&Path, &[u8], &Value),
) -> Result<u64, String> {
    if let [dir] = dirs {
        return search(dir, f, |line, v| each(dir, line, v));
    }
    let mut found: Vec<(u64, usize, Vec<u8>, Value)> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        search(dir, f, |line, v| {
            let ts = v.get("ts").and_then(Value::as_u64).unwrap_or(0);
            found.push((ts, i, line.to_vec(), v.clone()));
        })?;
    }
    // Each log is in time order already; a stable sort by time interleaves them.
    found.sort_by_key(|(ts, ..)| *ts);
    for (_, i, line, v) in &found {
        each(&dirs[*i], line, v);
    }
    Ok(found.len() as u64)
}

/// `2026-11-26T22:00:00Z` (or with a fractional part / offset-free) or an age.
pub fn parse_time(s: &str) -> Result<u64, String> {
    if let Some(d) = sluice_config::parse_duration(s) {
        return Ok(crate::audit::now_ms().saturating_sub(d.as_millis() as u64));
    }
    let bad = || format!("invalid time `{s}`: use 2026-11-26T22:00:00Z or an age like 1h");
    let s = s.trim_end_matches('Z');
    let (date, time) = s.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let t: Vec<f64> = time
        .split(':')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || t.len() != 3 {
        return Err(bad());
    }
    let days = days_from_civil(d[0], d[1] as u32, d[2] as u32);
    let secs = days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2];
    Ok((secs * 1000.0) as u64)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// CSV columns of `sluice audit export --format csv`.
pub const CSV_COLUMNS: &[&str] = super::event::FIELDS;

pub fn csv_row(v: &Value, out: &mut impl Write) -> std::io::Result<()> {
    let mut first = true;
    for c in CSV_COLUMNS {
        if !first {
            out.write_all(b",")?;
        }
        first = false;
        let cell = match v.get(*c) {
            None if *c == "time" => v
                .get("ts")
                .and_then(Value::as_u64)
                .map_or_else(String::new, crate::log::rfc3339_ms),
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(" "),
            Some(other) => other.to_string(),
        };
        if cell.contains([',', '"', '\n', '\r']) {
            write!(out, "\"{}\"", cell.replace('"', "\"\""))?;
        } else {
            out.write_all(cell.as_bytes())?;
        }
    }
    out.write_all(b"\n")
}

/// Prints new records of the newest segment as they are written (`tail -f`).
/// The next whole line at the reader's position into `line`; `false` if there
/// is none yet: the end of the file, a batch still being written, or the fill
/// the writer made ahead (no record starts with a space), which is not read
/// through on every poll.
fn next_line(reader: &mut BufReader<std::fs::File>, line: &mut Vec<u8>) -> Result<bool, String> {
    let first = reader
        .fill_buf()
        .map_err(|e| e.to_string())?
        .first()
        .copied();
    if matches!(first, None | Some(b' ' | 0)) {
        return Ok(false);
    }
    let n = reader.read_until(b'\n', line).map_err(|e| e.to_string())?;
    Ok(n > 0 && line.ends_with(b"\n"))
}

pub fn tail(dir: &Path, follow: bool, lines: usize, out: &mut impl Write) -> Result<(), String> {
    let segments = chain::segments(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let Some(last) = segments.last().cloned() else {
        return Err(format!("{}: no audit segments", dir.display()));
    };
    let file = std::fs::File::open(&last).map_err(|e| format!("{}: {e}", last.display()))?;
    let mut reader = BufReader::new(file);
    // The last `lines` whole lines, and where they end: what follows may be
    // a batch being written, or the fill the writer made ahead.
    let mut last_lines = std::collections::VecDeque::with_capacity(lines.min(1024));
    let mut line = Vec::new();
    let mut offset = 0u64;
    while next_line(&mut reader, &mut line)? {
        offset += line.len() as u64;
        if lines > 0 {
            if last_lines.len() == lines {
                last_lines.pop_front();
            }
            last_lines.push_back(std::mem::take(&mut line));
        }
        line.clear();
    }
    line.clear();
    reader
        .seek(SeekFrom::Start(offset))
        .map_err(|e| e.to_string())?;
    for l in &last_lines {
        out.write_all(l).map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    if !follow {
        return Ok(());
    }
    let mut current = last;
    loop {
        if next_line(&mut reader, &mut line)? {
            offset += line.len() as u64;
            out.write_all(&line).map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
            line.clear();
            continue;
        }
        // Not a whole line yet: read it again from its start next time.
        line.clear();
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| e.to_string())?;
        // Rotated? Move to the newest segment, once the old one has nothing
        // more (its last batch may have landed just before the rotation).
        if let Some(newest) = chain::segments(dir).ok().and_then(|s| s.last().cloned()) {
            if newest != current {
                if next_line(&mut reader, &mut line)? {
                    offset += line.len() as u64;
                    out.write_all(&line).map_err(|e| e.to_string())?;
                    out.flush().map_err(|e| e.to_string())?;
                    line.clear();
                    continue;
                }
                line.clear();
                let f = std::fs::File::open(&newest).map_err(|e| e.to_string())?;
                reader = BufReader::new(f);
                current = newest;
                offset = 0;
                continue;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
