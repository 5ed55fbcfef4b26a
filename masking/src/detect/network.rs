//! Network addresses: IPv4 dotted quads and IPv6.

use super::{boundary, digit_at, is_word, Detector, Hit};

/// A dotted-quad IPv4 address at `i` (not part of a longer dotted version).
pub(super) fn ipv4_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
    if !digit_at(buf, i) || (i > 0 && (buf[i - 1] == b'.' || is_word(buf[i - 1]))) {
        return;
    }
    let mut j = i;
    for part in 0..4 {
        let s = j;
        while j < buf.len() && buf[j].is_ascii_digit() && j - s < 4 {
            j += 1;
        }
        let n = &buf[s..j];
        if n.is_empty() || n.len() > 3 || (n.len() > 1 && n[0] == b'0') {
            return;
        }
        if n.iter().fold(0u32, |a, &c| a * 10 + (c - b'0') as u32) > 255 {
            return;
        }
        if part < 3 {
            if buf.get(j) != Some(&b'.') {
                return;
            }
            j += 1;
        }
    }
    // Version strings like 1.2.3.4.5 are not addresses.
    if boundary(buf, Some(j)) && !(buf.get(j) == Some(&b'.') && digit_at(buf, j + 1)) {
        out.push(Hit {
            detector: Detector::Ipv4,
            range: i..j,
        });
    }
}

/// An IPv6 address around the `:` at `colon`; returns its end when found.
pub(super) fn ipv6_at(buf: &[u8], colon: usize, out: &mut Vec<Hit>) -> Option<usize> {
    if buf.get(colon) != Some(&b':') {
        return None;
    }
    let is_hex = |b: u8| b.is_ascii_hexdigit() || b == b':';
    // The longest address text is 45 bytes; a longer run is not one, and the
    // bound keeps a long run of colons from costing its length at each colon.
    const MAX: usize = 45;
    let mut s = colon;
    while s > 0 && is_hex(buf[s - 1]) {
        s -= 1;
        if colon - s > MAX {
            return None;
        }
    }
    let mut e = colon;
    while e < buf.len() && (is_hex(buf[e]) || buf[e] == b'.') {
        e += 1;
        if e - s > MAX {
            return None;
        }
    }
    let cand = &buf[s..e];
    if e - s <= 2 || memchr::memchr_iter(b':', cand).nth(1).is_none() {
        return None;
    }
    if !boundary(buf, s.checked_sub(1)) {
        return None;
    }
    let text = std::str::from_utf8(cand).ok()?;
    text.parse::<std::net::Ipv6Addr>().ok()?;
    out.push(Hit {
        detector: Detector::Ipv6,
        range: s..e,
    });
    Some(e)
}
