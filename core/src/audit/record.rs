//! Audit record bodies, encoded as one JSON object per record straight into a
//! reused buffer (no allocation once warm). The writer later prefixes each body
//! with its sequence number and the previous record's hash.

use std::fmt::Write as _;

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
            let _ = write_hex(self.out, b);
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

    pub fn strs<S: AsRef<str>>(mut self, k: &str, v: &[S]) -> Self {
        self.key(k);
        self.out.push(b'[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            escape(self.out, s.as_ref().as_bytes());
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

    pub fn end(self) {
        self.out.push(b'}');
    }
}

fn is_char_boundary(v: &[u8], i: usize) -> bool {
    i >= v.len() || (v[i] as i8) >= -0x40
}

fn write_hex(out: &mut Vec<u8>, b: u8) -> std::fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(HEX[(b >> 4) as usize]);
    out.push(HEX[(b & 15) as usize]);
    Ok(())
}

fn push_num(out: &mut Vec<u8>, v: u64) {
    let mut buf = itoa_buf(v);
    out.append(&mut buf);
}

fn itoa_buf(mut v: u64) -> Vec<u8> {
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
    tmp[i..].to_vec()
}

/// Writes `v` as a JSON string.
pub fn escape(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    let text = String::from_utf8_lossy(v);
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let mut s = String::new();
                let _ = write!(s, "\\u{:04x}", c as u32);
                out.extend_from_slice(s.as_bytes());
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
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
            .strs("kinds", &["delete", "select"])
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
