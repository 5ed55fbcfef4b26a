//! Session recordings: one asciicast v2 file per channel (`o` output, `i`
//! input, `r` resize, `m` markers for decisions), in `AUDIT_DIR/sessions/`.
//! The recording's size and SHA-256 go into the audit log's hash chain when
//! the channel closes, so `sluice audit verify` can prove it untouched.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use sha2::{Digest, Sha256};

/// Largest recording of one channel: a session that would outgrow it is
/// ended (nothing runs unrecorded).
const MAX_BYTES: u64 = 256 << 20;

pub(super) struct Recording {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
    bytes: u64,
    started: Instant,
    full: bool,
    /// The event line being written, kept for the next one.
    scratch: Vec<u8>,
    /// The first bytes of a character split across packets, for output and
    /// input (at most 3 each).
    carry: [Vec<u8>; 2],
}

/// What the audit log keeps of a finished recording.
pub(super) struct Sealed {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

impl Recording {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Starts `DIR/ID.cast` with its asciicast header.
    pub fn create(
        dir: &std::path::Path,
        id: &str,
        width: u32,
        height: u32,
        title: &str,
    ) -> std::io::Result<Recording> {
        let path = dir.join(format!("{id}.cast"));
        use std::os::unix::fs::OpenOptionsExt;
        // Keystrokes can hold passwords typed to the host: owner only.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut r = Recording {
            path,
            file: std::io::BufWriter::with_capacity(64 * 1024, file),
            hash: Sha256::new(),
            bytes: 0,
            started: Instant::now(),
            full: false,
            scratch: Vec::new(),
            carry: Default::default(),
        };
        let header = serde_json::json!({
            "version": 2,
            "width": width.max(1),
            "height": height.max(1),
            "timestamp": crate::identity::unix_now(),
            "title": title,
        });
        r.line(header.to_string().as_bytes())?;
        Ok(r)
    }

    fn line(&mut self, text: &[u8]) -> std::io::Result<()> {
        self.file.write_all(text)?;
        self.file.write_all(b"\n")?;
        self.hash.update(text);
        self.hash.update(b"\n");
        self.bytes += text.len() as u64 + 1;
        Ok(())
    }

    /// One event: `kind` is `o`, `i`, `r` or `m`. `Err`: it could not be
    /// recorded (the disk, or the size limit), so the session must end.
    pub fn event(&mut self, kind: &str, data: &[u8]) -> Result<(), String> {
        if self.full {
            return Err("the recording is closed".into());
        }
        if self.bytes > MAX_BYTES {
            self.full = true;
            let note = serde_json::json!([
                self.elapsed(),
                "m",
                "recording limit reached; session ended"
            ]);
            let _ = self.line(note.to_string().as_bytes());
            return Err(format!(
                "the session outgrew its recording ({} MiB)",
                MAX_BYTES >> 20
            ));
        }
        // `[SECONDS, "KIND", "DATA"]`, escaped straight into a reused line:
        // bulk output is most of what a session moves.
        let mut line = std::mem::take(&mut self.scratch);
        line.clear();
        line.reserve(data.len() + data.len() / 8 + 32);
        let _ = write!(line, "[{:.6},\"{kind}\",\"", self.elapsed());
        // A character split across packets is written whole with the next
        // event of its stream: the carry holds its first bytes.
        let carry = match kind {
            "o" => Some(&mut self.carry[0]),
            "i" => Some(&mut self.carry[1]),
            _ => None,
        };
        let mut joined = Vec::new();
        let data = match carry {
            Some(carry) if !carry.is_empty() => {
                joined.extend_from_slice(carry);
                joined.extend_from_slice(data);
                carry.clear();
                &joined[..]
            }
            _ => data,
        };
        let data = match (std::str::from_utf8(data), kind) {
            (Err(e), "o" | "i") if e.error_len().is_none() => {
                // Incomplete at the end: kept for the next event.
                let (whole, rest) = data.split_at(e.valid_up_to());
                self.carry[usize::from(kind == "i")].extend_from_slice(rest);
                whole
            }
            _ => data,
        };
        match std::str::from_utf8(data) {
            Ok(text) => escape_into(text, &mut line),
            Err(_) => escape_into(&String::from_utf8_lossy(data), &mut line),
        }
        line.extend_from_slice(b"\"]");
        let written = self.line(&line);
        self.scratch = line;
        written.map_err(|e| {
            self.full = true;
            format!("the recording cannot be written: {e}")
        })
    }

    /// The time since the recording started, in seconds (microsecond precision).
    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_micros() as f64 / 1e6
    }

    /// Flushes and syncs the file; its size and hash.
    pub fn seal(mut self) -> std::io::Result<Sealed> {
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        Ok(Sealed {
            path: self.path,
            bytes: self.bytes,
            sha256: crate::approvals::store::hex(&self.hash.finalize()),
        })
    }
}

/// Appends `text` as the inside of a JSON string: runs that need no escape
/// are copied whole; quotes, backslashes and control characters escaped.
fn escape_into(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&bytes[from..i]);
                out.extend_from_slice(b"\\u00");
                out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
                from = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        out.extend_from_slice(escaped);
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
}

#[cfg(test)]
mod tests {
    /// A character split across two events is recorded whole, in the second.
    #[test]
    fn a_character_split_across_packets_is_recorded_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = super::Recording::create(dir.path(), "split", 80, 24, "t").unwrap();
        let text = "é✓".as_bytes();
        r.event("o", &text[..1]).unwrap();
        r.event("o", &text[1..4]).unwrap();
        r.event("o", &text[4..]).unwrap();
        let sealed = r.seal().unwrap();
        let cast = std::fs::read_to_string(sealed.path).unwrap();
        let shown: String = cast
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|e| e[2].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(shown, "é✓");
    }

    /// Event lines are JSON that reads back as the bytes recorded.
    #[test]
    fn events_escape_as_json_reads_them() {
        for text in [
            "plain",
            "quote \" backslash \\ tab \t cr \r nl \n",
            "\u{0}\u{1b}[31mred\u{7f} ünïcödé ✓",
            "",
        ] {
            let mut out = b"\"".to_vec();
            super::escape_into(text, &mut out);
            out.push(b'"');
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, text);
        }
    }
}
