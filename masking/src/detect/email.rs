//! Emails: the validator anchored at the `@`.

use super::{Detector, Hit};

const LOCAL: u8 = 1;
const DOMAIN: u8 = 2;

/// Which bytes may appear in an email's local part and domain.
static EMAIL_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
            t[c] = LOCAL | DOMAIN;
        } else if b == b'_' || b == b'%' || b == b'+' {
            t[c] = LOCAL;
        }
        c += 1;
    }
    t
};

fn is_local(b: u8) -> bool {
    EMAIL_BYTES[b as usize] & LOCAL != 0
}

fn is_domain(b: u8) -> bool {
    EMAIL_BYTES[b as usize] & DOMAIN != 0
}

/// An email around the `@` at `at`.
pub(crate) fn email_at(buf: &[u8], at: usize, out: &mut Vec<Hit>) {
    if buf.get(at) != Some(&b'@') {
        return;
    }
    let mut s = at;
    while s > 0 && is_local(buf[s - 1]) {
        s -= 1;
    }
    // The local part may not start or end with a dot.
    while s < at && buf[s] == b'.' {
        s += 1;
    }
    if s == at || buf[at - 1] == b'.' {
        return;
    }
    let mut e = at + 1;
    while e < buf.len() && is_domain(buf[e]) {
        e += 1;
    }
    // Trailing dots and dashes (a full stop after the address) are not part
    // of it.
    while e > at + 1 && matches!(buf[e - 1], b'.' | b'-') {
        e -= 1;
    }
    // One pass over the domain: its last dot, whether two dots meet, and
    // where its trailing letters (the TLD, if the last dot precedes them)
    // start.
    let (mut last_dot, mut prev_dot, mut double_dot, mut letters) = (None, false, false, at + 1);
    for (i, &b) in buf.iter().enumerate().take(e).skip(at + 1) {
        let dot = b == b'.';
        double_dot |= dot && prev_dot;
        prev_dot = dot;
        last_dot = if dot { Some(i) } else { last_dot };
        letters = if b.is_ascii_alphabetic() {
            letters
        } else {
            i + 1
        };
    }
    // A TLD of two or more letters after the last dot, which is not the
    // domain's first byte; no two dots together.
    let Some(dot) = last_dot else {
        return;
    };
    if dot == at + 1 || letters != dot + 1 || e - letters < 2 || double_dot {
        return;
    }
    out.push(Hit {
        detector: Detector::Email,
        range: s..e,
    });
}
