//! Audit record bodies, encoded as one JSON object per record straight into a
//! reused buffer (no allocation once warm). The writer later prefixes each body
//! with its sequence number and the previous record's hash.

use sha2::{Digest, Sha256};

/// Longest command text stored as is; longer text is cut and its SHA-256 kept.
pub const MAX_TEXT: usize = 4096;

/// Builds one record body: `{"type":"...","ts":...,...}`.
pub struct Rec<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Rec<'a> {
    pub fn begin(out: &'a mut Vec<u8>, kind: &str, ts_ms: u64) -> Rec<'a> {
        out.clear();
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"ts\":");
        push_num(out, ts_ms);
        Rec { out }
    }

    fn key(&mut self, k: &str) {
        self.out.extend_from_slice(b",\"");
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    pub fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        escape(self.out, v.as_bytes());
        self
    }

    /// A byte string shown as text (invalid UTF-8 becomes U+FFFD).
    pub fn bytes(mut self, k: &str, v: &[u8]) -> Self {
        self.key(k);
        escape(self.out, v);
        self
    }

    /// Command text, cut at [`MAX_TEXT`] with the full text's hash.
    pub fn text(mut self, k: &str, v: &[u8]) -> Self {
        if v.len() <= MAX_TEXT {
            return self.bytes(k, v);
        }
        let mut cut = MAX_TEXT;
        while cut > 0 && !is_char_boundary(v, cut) {
            cut -= 1;
        }
        self = self.bytes(k, &v[..cut]);
        self.key("text_truncated");
        self.out.extend_from_slice(b"true");
        self.key("text_sha256");
        let digest = Sha256::digest(v);
        self.out.push(b'"');
        for b in digest {
            write_hex(self.out, b);
        }
        self.out.push(b'"');
        self.key("text_len");
        push_num(self.out, v.len() as u64);
        self
    }

    pub fn num(mut self, k: &str, v: u64) -> Self {
        self.key(k);
        push_num(self.out, v);
        self
    }

    pub fn bool(mut self, k: &str, v: bool) -> Self {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        self
    }

    pub fn strs<S: AsRef<str>>(mut self, k: &str, v: impl IntoIterator<Item = S>) -> Self {
        self.key(k);
        self.out.push(b'[');
        for (i, s) in v.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            escape(self.out, s.as_ref().as_bytes());
        }
        self.out.push(b']');
        self
    }

    /// Ids as an array of JSON strings (`["1","2"]`), without formatting each.
    pub fn ids(mut self, k: &str, v: impl IntoIterator<Item = u64>) -> Self {
        self.key(k);
        self.out.push(b'[');
        for (i, id) in v.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.push(b'"');
            push_num(self.out, id);
            self.out.push(b'"');
        }
        self.out.push(b']');
        self
    }

    /// `{"name": count, ...}` from pairs.
    pub fn counts(mut self, k: &str, v: &[(&str, u64)]) -> Self {
        self.key(k);
        self.out.push(b'{');
        for (i, (name, n)) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            escape(self.out, name.as_bytes());
            self.out.push(b':');
            push_num(self.out, *n);
        }
        self.out.push(b'}');
        self
    }

    /// `k` only when there is a value.
    pub fn opt_str(self, k: &str, v: Option<&str>) -> Self {
        match v {
            Some(v) => self.str(k, v),
            None => self,
        }
    }

    /// `k` only when there is a value.
    pub fn opt_num(self, k: &str, v: Option<u64>) -> Self {
        match v {
            Some(v) => self.num(k, v),
            None => self,
        }
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}

fn is_char_boundary(v: &[u8], i: usize) -> bool {
    i >= v.len() || (v[i] as i8) >= -0x40
}

fn write_hex(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(HEX[(b >> 4) as usize]);
    out.push(HEX[(b & 15) as usize]);
}

/// Appends the decimal digits of `v` (no allocation).
pub fn push_num(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Bytes that can be copied into a JSON string as they are (printable ASCII
/// other than `"` and `\\`; UTF-8 is handled separately).
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x80 {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

/// Writes `v` as a JSON string. Runs of plain bytes are copied whole; valid UTF-8
/// is kept as is; invalid bytes become U+FFFD.
pub fn escape(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    let mut rest = v;
    while !rest.is_empty() {
        let run = rest
            .iter()
            .position(|&b| !PLAIN[b as usize])
            .unwrap_or(rest.len());
        out.extend_from_slice(&rest[..run]);
        rest = &rest[run..];
        let Some(&b) = rest.first() else { break };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => {
                // Non-ASCII: copy the longest valid UTF-8 prefix, replace one bad byte.
                let chunk = &rest[..rest.len().min(4096)];
                let valid = match std::str::from_utf8(chunk) {
                    Ok(s) => s.len(),
                    Err(e) => e.valid_up_to(),
                };
                // Copy only the non-ASCII part of the valid prefix, then resume the
                // fast loop (which handles quotes and controls).
                let upto = chunk[..valid]
                    .iter()
                    .position(|&c| c < 0x80)
                    .unwrap_or(valid);
                if upto == 0 {
                    out.extend_from_slice("\u{fffd}".as_bytes());
                    rest = &rest[1..];
                    continue;
                }
                out.extend_from_slice(&rest[..upto]);
                rest = &rest[upto..];
                continue;
            }
        }
        rest = &rest[1..];
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_valid_json_and_long_text_is_cut_with_its_hash() {
        let mut out = Vec::new();
        Rec::begin(&mut out, "command", 123)
            .str("subject", "al\"ice\n")
            .bytes("raw", b"\xff\x01")
            .strs("kinds", ["delete", "select"])
            .counts("masked", &[("email", 3)])
            .bool("ok", true)
            .end();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["subject"], "al\"ice\n");
        assert_eq!(v["raw"], "\u{fffd}\u{1}");
        assert_eq!(v["kinds"][0], "delete");
        assert_eq!(v["masked"]["email"], 3);
        let long = "é".repeat(3000);
        Rec::begin(&mut out, "command", 1)
            .text("text", long.as_bytes())
            .end();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["text"].as_str().unwrap().len() <= MAX_TEXT);
        assert_eq!(v["text_len"], long.len());
        assert_eq!(v["text_sha256"].as_str().unwrap().len(), 64);
    }
}
