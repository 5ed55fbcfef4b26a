//! Secrets and tokens: AWS keys, JWTs, PEM private keys, bearer tokens and
//! API tokens with well-known prefixes.

use super::{boundary, Detector, Hit};

fn token_end(buf: &[u8], mut i: usize, extra: &[u8]) -> usize {
    while i < buf.len() && (buf[i].is_ascii_alphanumeric() || extra.contains(&buf[i])) {
        i += 1;
    }
    i
}

/// An AWS access key id (`AKIA`/`ASIA` + 16) at `i`, and a 40-character secret
/// key within 200 bytes after it.
pub(super) fn aws_key_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
    let Some(id) = buf.get(i..i + 20) else {
        return;
    };
    if !(id.starts_with(b"AKIA") || id.starts_with(b"ASIA"))
        || !id[4..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        || !boundary(buf, i.checked_sub(1))
        || !boundary(buf, Some(i + 20))
    {
        return;
    }
    let end = i + 20;
    out.push(Hit {
        detector: Detector::AwsKey,
        range: i..end,
    });
    // Secret keys: a 40-char [A-Za-z0-9/+] token.
    let window = &buf[end..buf.len().min(end + 200)];
    let mut j = 0;
    while j < window.len() {
        let t = token_end(window, j, b"/+");
        if t - j == 40
            && window[j..t].iter().any(u8::is_ascii_lowercase)
            && window[j..t].iter().any(u8::is_ascii_digit)
        {
            out.push(Hit {
                detector: Detector::AwsKey,
                range: end + j..end + t,
            });
            break;
        }
        j = if t > j { t } else { j + 1 };
    }
}

/// A compact JWT at `i`: `eyJ...` header, payload and signature in base64url.
pub(super) fn jwt_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
    if !buf[i..].starts_with(b"eyJ") || !boundary(buf, i.checked_sub(1)) {
        return;
    }
    let b64 = b"-_=";
    let h = token_end(buf, i, b64);
    if buf.get(h) != Some(&b'.') || h - i < 10 {
        return;
    }
    let p = token_end(buf, h + 1, b64);
    if !buf[h + 1..].starts_with(b"eyJ") || buf.get(p) != Some(&b'.') {
        return;
    }
    let s = token_end(buf, p + 1, b64);
    if s - p < 2 {
        return;
    }
    out.push(Hit {
        detector: Detector::Jwt,
        range: i..s,
    });
}

/// A PEM private key whose `-----BEGIN ` line starts at `b`: the base64 body
/// between the BEGIN and END lines. `ends` remembers the last search for an
/// END line (`(from, found)`: the first one at or after `from` is at `found`,
/// the buffer's length if none), so many BEGIN lines before one END, or none,
/// cost one search instead of one each.
pub(super) fn private_key_at(buf: &[u8], b: usize, out: &mut Vec<Hit>, ends: &mut (usize, usize)) {
    if !buf[b..].starts_with(b"-----BEGIN ") {
        return;
    }
    let Some(le) = memchr::memmem::find(&buf[b + 11..], b"-----").map(|p| b + 11 + p + 5) else {
        return;
    };
    if !buf[b..le].windows(11).any(|w| w == b"PRIVATE KEY") {
        return;
    }
    if !(ends.0 <= le && le <= ends.1) {
        let found = memchr::memmem::find(&buf[le..], b"-----END ").map_or(buf.len(), |p| le + p);
        *ends = (le, found);
    }
    // Unterminated: mask to the end of the buffer (fail closed).
    out.push(Hit {
        detector: Detector::PrivateKey,
        range: le..ends.1,
    });
}

/// `Bearer <token>` (or `bearer`) at `b`: the token of 16 or more characters.
pub(super) fn bearer_at(buf: &[u8], b: usize, out: &mut Vec<Hit>) {
    if !matches!(buf[b], b'B' | b'b') || !buf[b + 1..].starts_with(b"earer ") {
        return;
    }
    let s = b + 7;
    let e = token_end(buf, s, b"-._~+/=");
    if e - s >= 16 {
        out.push(Hit {
            detector: Detector::Bearer,
            range: s..e,
        });
    }
}

/// Well-known API token prefixes; the first that matches at a position wins.
pub(crate) const API_PREFIXES: &[&[u8]] = &[
    b"sk_live_",
    b"sk_test_",
    b"rk_live_",
    b"pk_live_",
    b"ghp_",
    b"gho_",
    b"ghu_",
    b"ghs_",
    b"ghr_",
    b"github_pat_",
    b"xoxb-",
    b"xoxp-",
    b"xoxa-",
    b"xoxr-",
    b"AIza",
    b"glpat-",
    b"npm_",
];

/// Where the first `_` or `-` of each prefix is (always after a lowercase
/// letter): an `_` or `-` at `p` can be inside a prefix that starts at `p - k`
/// for these `k`.
pub(super) const UNDERSCORE_AT: [usize; 3] = [2, 3, 6];
pub(super) const DASH_AT: [usize; 2] = [4, 5];

/// An API token at `i`: a known prefix then 16 or more token characters.
pub(super) fn api_key_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
    let rest = &buf[i..];
    if !matches!(
        rest.first(),
        Some(b's' | b'r' | b'p' | b'g' | b'x' | b'A' | b'n')
    ) {
        return;
    }
    let Some(prefix) = API_PREFIXES.iter().find(|p| rest.starts_with(p)) else {
        return;
    };
    if !boundary(buf, i.checked_sub(1)) {
        return;
    }
    let e = token_end(buf, i + prefix.len(), b"_-");
    if e - i - prefix.len() >= 16 {
        out.push(Hit {
            detector: Detector::ApiKey,
            range: i..e,
        });
    }
}
