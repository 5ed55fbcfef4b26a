//! The on-disk format, shared by the writer and `sluice audit verify`.
//!
//! A log is a directory of segment files `audit-<first seq, 20 digits>.log`, each
//! holding one record per line. Every line is a JSON object that starts with
//! `{"seq":N,"prev":"<hex SHA-256 of the previous line>",` and is followed by the
//! record body. Every so often (and at clean shutdown) a `checkpoint` record signs
//! `"<seq>:<prev>"` with the gateway's Ed25519 key, so the chain up to it cannot
//! be rewritten without the key.

use sha2::{Digest, Sha256};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The SHA-256 of `line` as 64 lowercase hex digits, into `out` (no allocation).
pub fn hash_hex_into(line: &[u8], out: &mut [u8; 64]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in Sha256::digest(line).iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
}

pub fn hash_hex(line: &[u8]) -> String {
    let mut out = [0u8; 64];
    hash_hex_into(line, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The line for a record body: `{"seq":N,"prev":"...",` + body without its `{`.
pub fn line(seq: u64, prev: &[u8], body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"seq\":");
    super::record::push_num(out, seq);
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(prev);
    out.extend_from_slice(b"\",");
    out.extend_from_slice(&body[1..]);
}

/// What a checkpoint signs: its place in the chain and its own fields.
pub fn checkpoint_message(seq: u64, prev: &str, ts: u64, records: u64) -> String {
    format!("sluice-audit-checkpoint:{seq}:{prev}:{ts}:{records}")
}

/// The exact line of a checkpoint record; verification rebuilds it and compares
/// byte for byte, so no field of a checkpoint can change unnoticed.
pub fn checkpoint_line(seq: u64, prev: &str, ts: u64, records: u64, sig: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    super::record::Rec::begin(&mut body, "checkpoint", ts)
        .num("records", records)
        .str("sig", sig)
        .end();
    let mut out = Vec::with_capacity(body.len() + 96);
    line(seq, prev.as_bytes(), &body, &mut out);
    out
}

pub fn segment_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.log")
}

/// Segment files of `dir`, in order.
pub fn segments(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut v: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".log"))
        })
        .collect();
    v.sort();
    Ok(v)
}
