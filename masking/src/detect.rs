//! Content detectors. Each starts from a cheap prefilter (a byte that every match
//! must contain: `@` for emails, a digit run for cards, a fixed prefix for keys)
//! and only then validates (Luhn, mod-97, ranges), so text without candidates
//! costs a memchr pass.
//!
//! A detector reports byte ranges of sensitive values within one buffer; masking
//! them is [`crate::mask`]'s job.

use std::ops::Range;

/// The built-in detectors (`[masking.NAME] detectors = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Detector {
    Email,
    CreditCard,
    Ssn,
    Phone,
    Iban,
    Ipv4,
    Ipv6,
    AwsKey,
    Jwt,
    PrivateKey,
    Bearer,
    ApiKey,
}

impl Detector {
    pub const ALL: [Detector; 12] = [
        Detector::Email,
        Detector::CreditCard,
        Detector::Ssn,
        Detector::Phone,
        Detector::Iban,
        Detector::Ipv4,
        Detector::Ipv6,
        Detector::AwsKey,
        Detector::Jwt,
        Detector::PrivateKey,
        Detector::Bearer,
        Detector::ApiKey,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::CreditCard => "credit_card",
            Detector::Ssn => "ssn",
            Detector::Phone => "phone",
            Detector::Iban => "iban",
            Detector::Ipv4 => "ipv4",
            Detector::Ipv6 => "ipv6",
            Detector::AwsKey => "aws_key",
            Detector::Jwt => "jwt",
            Detector::PrivateKey => "private_key",
            Detector::Bearer => "bearer",
            Detector::ApiKey => "api_key",
        }
    }

    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// One detected value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub detector: Detector,
    pub range: Range<usize>,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// True if `buf[i]` is absent or not a word byte (a match boundary).
fn boundary(buf: &[u8], i: Option<usize>) -> bool {
    i.and_then(|i| buf.get(i)).is_none_or(|&b| !is_word(b))
}

/// Does the 8-byte word hold an ASCII digit? (Bit Twiddling Hacks' `hasbetween`
/// for '/' < b < ':'; bytes >= 0x80 never count.)
#[inline]
fn word_has_digit(x: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const LOW7: u64 = ONES * 127;
    const HIGH: u64 = ONES * 128;
    let (m, n) = (b'/' as u64, b':' as u64);
    ((ONES * (127 + n)).wrapping_sub(x & LOW7)
        & !x
        & ((x & LOW7).wrapping_add(ONES * (127 - m)))
        & HIGH)
        != 0
}

/// Position of the first ASCII digit at or after `i` (`buf.len()` if none),
/// skipping eight bytes at a time through text without digits.
#[inline]
pub fn next_digit(buf: &[u8], mut i: usize) -> usize {
    while i + 8 <= buf.len() {
        let x = u64::from_ne_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
        if word_has_digit(x) {
            break;
        }
        i += 8;
    }
    while i < buf.len() && !buf[i].is_ascii_digit() {
        i += 1;
    }
    i
}

// ---- email -------------------------------------------------------------------

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

pub fn emails(buf: &[u8], out: &mut Vec<Hit>) {
    for at in memchr::memchr_iter(b'@', buf) {
        let mut s = at;
        while s > 0 && is_local(buf[s - 1]) {
            s -= 1;
        }
        // The local part may not start or end with a dot.
        while s < at && buf[s] == b'.' {
            s += 1;
        }
        if s == at || buf[at - 1] == b'.' {
            continue;
        }
        let mut e = at + 1;
        while e < buf.len() && is_domain(buf[e]) {
            e += 1;
        }
        while e > at + 1 && matches!(buf[e - 1], b'.' | b'-') {
            e -= 1;
        }
        let domain = &buf[at + 1..e];
        let Some(dot) = memchr::memrchr(b'.', domain) else {
            continue;
        };
        let tld = &domain[dot + 1..];
        if dot == 0
            || tld.len() < 2
            || !tld.iter().all(u8::is_ascii_alphabetic)
            || domain.contains(&b'@')
        {
            continue;
        }
        if domain.windows(2).any(|w| w == b"..") {
            continue;
        }
        if out
            .last()
            .is_some_and(|h| h.detector == Detector::Email && h.range.end > s)
        {
            continue;
        }
        out.push(Hit {
            detector: Detector::Email,
            range: s..e,
        });
    }
}

// ---- digit runs: cards, SSNs, phones ------------------------------------------

/// Luhn checksum over ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = (d - b'0') as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

/// Known card issuer ranges (IIN) with their valid lengths.
fn known_iin(d: &[u8]) -> bool {
    let n = |k: usize| -> u32 { d[..k].iter().fold(0, |a, &c| a * 10 + (c - b'0') as u32) };
    let len = d.len();
    match d[0] {
        b'4' => matches!(len, 13 | 16 | 19),
        b'5' => (51..=55).contains(&n(2)) && len == 16,
        b'2' => (2221..=2720).contains(&n(4)) && len == 16,
        b'3' => {
            (matches!(n(2), 34 | 37) && len == 15)
                || ((3528..=3589).contains(&n(4)) && (16..=19).contains(&len))
                || ((matches!(n(2), 36 | 38 | 39) || (300..=305).contains(&n(3)))
                    && (14..=19).contains(&len))
        }
        b'6' => {
            (n(4) == 6011
                || n(2) == 65
                || (644..=649).contains(&n(3))
                || (622_126..=622_925).contains(&n(6)))
                && (16..=19).contains(&len)
                || (n(2) == 62 && (16..=19).contains(&len))
        }
        _ => false,
    }
}

/// A run of digits with single separators (space or dash) between them:
/// returns its end and the digits.
fn digit_run(buf: &[u8], start: usize, seps: &[u8], digits: &mut Vec<u8>) -> usize {
    digits.clear();
    let mut i = start;
    let mut end = start;
    while i < buf.len() {
        let b = buf[i];
        if b.is_ascii_digit() {
            digits.push(b);
            i += 1;
            end = i;
        } else if seps.contains(&b) && buf.get(i + 1).is_some_and(u8::is_ascii_digit) && i > start {
            i += 1;
        } else {
            break;
        }
        if digits.len() > 19 {
            break;
        }
    }
    end
}

pub fn cards(buf: &[u8], out: &mut Vec<Hit>) {
    let mut digits = Vec::with_capacity(24);
    let mut i = next_digit(buf, 0);
    while i < buf.len() {
        if i > 0 && (buf[i - 1].is_ascii_digit() || is_word(buf[i - 1])) {
            i = next_digit(buf, i + 1);
            continue;
        }
        let end = digit_run(buf, i, b" -", &mut digits);
        let len = digits.len();
        if (13..=19).contains(&len)
            && boundary(buf, Some(end))
            && known_iin(&digits)
            && luhn(&digits)
        {
            out.push(Hit {
                detector: Detector::CreditCard,
                range: i..end,
            });
            i = next_digit(buf, end);
        } else {
            // Skip the rest of this digit group.
            i += 1;
            while i < buf.len() && buf[i].is_ascii_digit() {
                i += 1;
            }
            i = next_digit(buf, i);
        }
    }
}

/// US SSN `AAA-GG-SSSS`, excluding impossible areas (000, 666, 900-999), group 00
/// and serial 0000.
pub fn ssns(buf: &[u8], out: &mut Vec<Hit>) {
    if buf.len() < 11 {
        return;
    }
    for dash in memchr::memchr_iter(b'-', buf) {
        if dash < 3 || dash + 8 > buf.len() {
            continue;
        }
        let s = dash - 3;
        let cand = &buf[s..s + 11];
        let shape = cand.iter().enumerate().all(|(k, &b)| {
            if k == 3 || k == 6 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
        if !shape || !boundary(buf, s.checked_sub(1)) || !boundary(buf, Some(s + 11)) {
            continue;
        }
        if s > 0 && matches!(buf[s - 1], b'-' | b'.')
            || matches!(buf.get(s + 11), Some(b'-' | b'.'))
        {
            continue;
        }
        let area = &cand[..3];
        if area == b"000"
            || area == b"666"
            || area[0] == b'9'
            || &cand[4..6] == b"00"
            || &cand[7..] == b"0000"
        {
            continue;
        }
        if out
            .last()
            .is_some_and(|h| h.detector == Detector::Ssn && h.range.end > s)
        {
            continue;
        }
        out.push(Hit {
            detector: Detector::Ssn,
            range: s..s + 11,
        });
    }
}

/// Phone numbers: E.164 (`+` and 8-15 digits, with spaces, dashes, dots or
/// parentheses) and North American `(AAA) BBB-CCCC` / `AAA-BBB-CCCC`.
pub fn phones(buf: &[u8], out: &mut Vec<Hit>) {
    let mut digits = Vec::with_capacity(20);
    for plus in memchr::memchr_iter(b'+', buf) {
        if plus > 0 && (buf[plus - 1].is_ascii_alphanumeric()) {
            continue;
        }
        let end = phone_run(buf, plus + 1, &mut digits);
        if (8..=15).contains(&digits.len()) && digits[0] != b'0' && boundary(buf, Some(end)) {
            out.push(Hit {
                detector: Detector::Phone,
                range: plus..end,
            });
        }
    }
    // North American shapes without a country code: start at a digit or `(`.
    let mut i = 0;
    let mut paren = memchr::memchr(b'(', buf).unwrap_or(buf.len());
    loop {
        let d = next_digit(buf, i);
        if paren < i {
            paren = memchr::memchr(b'(', &buf[i.min(buf.len())..]).map_or(buf.len(), |x| i + x);
        }
        i = d.min(paren);
        if i + 12 > buf.len() {
            break;
        }
        let (start, ok) = if buf[i] == b'(' {
            (i, buf.len() >= i + 14 && na_shape(&buf[i..i + 14], true))
        } else {
            (i, na_shape(&buf[i..i + 12], false))
        };
        let len = if buf[i] == b'(' { 14 } else { 12 };
        if ok
            && boundary(buf, start.checked_sub(1))
            && boundary(buf, Some(start + len))
            && !matches!(buf.get(start + len), Some(b'-'))
        {
            if !out
                .iter()
                .any(|h| h.range.start < start + len && start < h.range.end)
            {
                out.push(Hit {
                    detector: Detector::Phone,
                    range: start..start + len,
                });
            }
            i += len;
        } else {
            i += 1;
        }
    }
}

fn phone_run(buf: &[u8], mut i: usize, digits: &mut Vec<u8>) -> usize {
    digits.clear();
    let mut end = i;
    while i < buf.len() && digits.len() <= 15 {
        match buf[i] {
            b'0'..=b'9' => {
                digits.push(buf[i]);
                i += 1;
                end = i;
            }
            b' ' | b'-' | b'.' | b'(' | b')'
                if buf
                    .get(i + 1)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'(') =>
            {
                i += 1
            }
            b')' if i > 0 && buf[i - 1].is_ascii_digit() && buf.get(i + 1) == Some(&b' ') => i += 1,
            _ => break,
        }
    }
    end
}

/// `(AAA) BBB-CCCC` (14 bytes) or `AAA-BBB-CCCC` / `AAA.BBB.CCCC` (12 bytes).
fn na_shape(c: &[u8], parens: bool) -> bool {
    let d = |r: Range<usize>| c[r].iter().all(u8::is_ascii_digit);
    let plausible = |area: &[u8], exch: &[u8]| area[0] >= b'2' && exch[0] >= b'2';
    if parens {
        c[0] == b'('
            && d(1..4)
            && c[4] == b')'
            && c[5] == b' '
            && d(6..9)
            && c[9] == b'-'
            && d(10..14)
            && plausible(&c[1..4], &c[6..9])
    } else {
        let sep = c[3];
        matches!(sep, b'-' | b'.')
            && c[7] == sep
            && d(0..3)
            && d(4..7)
            && d(8..12)
            && plausible(&c[0..3], &c[4..7])
    }
}

// ---- IBAN ----------------------------------------------------------------------

/// Country code and IBAN length (ISO 13616 registry, common entries).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AT", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"CH", 21),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"EE", 20),
    (b"ES", 24),
    (b"FI", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GI", 23),
    (b"GR", 27),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MT", 31),
    (b"NL", 18),
    (b"NO", 15),
    (b"PL", 28),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"SA", 24),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"TR", 26),
    (b"UA", 29),
];

/// ISO 7064 mod 97-10 over an IBAN's characters (already without spaces).
pub fn iban_mod97(iban: &[u8]) -> bool {
    let rearranged = iban[4..].iter().chain(&iban[..4]);
    let mut rem: u32 = 0;
    for &c in rearranged {
        let v = match c {
            b'0'..=b'9' => (c - b'0') as u32,
            b'A'..=b'Z' => (c - b'A') as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

pub fn ibans(buf: &[u8], out: &mut Vec<Hit>) {
    let mut chars = Vec::with_capacity(34);
    let mut i = 0;
    while i + 15 <= buf.len() {
        // Every IBAN has check digits at offsets 2 and 3: jump between digits.
        let d = next_digit(buf, i + 2);
        if d + 13 > buf.len() {
            break;
        }
        i = d - 2;
        let c = &buf[i..];
        let starts_like_iban =
            c[0].is_ascii_uppercase() && c[1].is_ascii_uppercase() && c[3].is_ascii_digit();
        if !starts_like_iban || !boundary(buf, i.checked_sub(1)) {
            i += 1;
            continue;
        }
        let Some(&(_, want)) = IBAN_LENGTHS.iter().find(|(cc, _)| cc[..] == c[..2]) else {
            i += 1;
            continue;
        };
        chars.clear();
        let mut j = i;
        let mut end = i;
        while j < buf.len() && chars.len() < want {
            let b = buf[j];
            if b.is_ascii_uppercase() || b.is_ascii_digit() {
                chars.push(b);
                j += 1;
                end = j;
            } else if b == b' '
                && chars.len() % 4 == 0
                && buf.get(j + 1).is_some_and(u8::is_ascii_alphanumeric)
            {
                j += 1;
            } else {
                break;
            }
        }
        if chars.len() == want && boundary(buf, Some(end)) && iban_mod97(&chars) {
            out.push(Hit {
                detector: Detector::Iban,
                range: i..end,
            });
            i = end;
        } else {
            i += 1;
        }
    }
}

// ---- network addresses ---------------------------------------------------------

pub fn ipv4s(buf: &[u8], out: &mut Vec<Hit>) {
    let mut i = next_digit(buf, 0);
    while i < buf.len() {
        if i > 0 && (buf[i - 1].is_ascii_digit() || buf[i - 1] == b'.' || is_word(buf[i - 1])) {
            i = next_digit(buf, i + 1);
            continue;
        }
        let mut j = i;
        let mut parts = 0;
        let mut ok = true;
        while parts < 4 {
            let s = j;
            while j < buf.len() && buf[j].is_ascii_digit() && j - s < 4 {
                j += 1;
            }
            let n = &buf[s..j];
            if n.is_empty() || n.len() > 3 || (n.len() > 1 && n[0] == b'0') {
                ok = false;
                break;
            }
            let v: u32 = n.iter().fold(0, |a, &c| a * 10 + (c - b'0') as u32);
            if v > 255 {
                ok = false;
                break;
            }
            parts += 1;
            if parts < 4 {
                if buf.get(j) != Some(&b'.') {
                    ok = false;
                    break;
                }
                j += 1;
            }
        }
        // Version strings like 1.2.3.4.5 are not addresses.
        if ok
            && boundary(buf, Some(j))
            && !(buf.get(j) == Some(&b'.') && buf.get(j + 1).is_some_and(u8::is_ascii_digit))
        {
            out.push(Hit {
                detector: Detector::Ipv4,
                range: i..j,
            });
            i = j;
        } else {
            i += 1;
        }
    }
}

pub fn ipv6s(buf: &[u8], out: &mut Vec<Hit>) {
    let mut last_end = 0;
    for colon in memchr::memchr_iter(b':', buf) {
        if colon < last_end {
            continue;
        }
        let is_hex = |b: u8| b.is_ascii_hexdigit() || b == b':';
        let mut s = colon;
        while s > 0 && is_hex(buf[s - 1]) {
            s -= 1;
        }
        let mut e = colon;
        while e < buf.len() && (is_hex(buf[e]) || buf[e] == b'.') {
            e += 1;
        }
        let cand = &buf[s..e];
        if cand.iter().filter(|&&b| b == b':').count() < 2 || !boundary(buf, s.checked_sub(1)) {
            continue;
        }
        let Ok(text) = std::str::from_utf8(cand) else {
            continue;
        };
        if text.parse::<std::net::Ipv6Addr>().is_ok() && text.len() > 2 {
            out.push(Hit {
                detector: Detector::Ipv6,
                range: s..e,
            });
            last_end = e;
        }
    }
}

// ---- secrets ---------------------------------------------------------------------

fn token_end(buf: &[u8], mut i: usize, extra: &[u8]) -> usize {
    while i < buf.len() && (buf[i].is_ascii_alphanumeric() || extra.contains(&buf[i])) {
        i += 1;
    }
    i
}

/// A substring searcher built once per process (building one costs more than
/// searching a short value).
macro_rules! finder {
    ($needle:literal) => {{
        static F: std::sync::OnceLock<memchr::memmem::Finder<'static>> = std::sync::OnceLock::new();
        F.get_or_init(|| memchr::memmem::Finder::new($needle))
    }};
}

/// AWS access key ids (`AKIA`/`ASIA` + 16) and 40-character secret keys near them.
pub fn aws_keys(buf: &[u8], out: &mut Vec<Hit>) {
    if buf.len() < 20 {
        return;
    }
    let mut key_ends = Vec::new();
    for prefix in [finder!(b"AKIA"), finder!(b"ASIA")] {
        for i in prefix.find_iter(buf) {
            if i + 20 > buf.len() {
                continue;
            }
            let id = &buf[i..i + 20];
            if id[4..]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                && boundary(buf, i.checked_sub(1))
                && boundary(buf, Some(i + 20))
            {
                out.push(Hit {
                    detector: Detector::AwsKey,
                    range: i..i + 20,
                });
                key_ends.push(i + 20);
            }
        }
    }
    // Secret keys: a 40-char [A-Za-z0-9/+] token within 200 bytes after a key id.
    for end in key_ends {
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
}

/// Compact JWTs: `eyJ...` header, payload and signature in base64url.
pub fn jwts(buf: &[u8], out: &mut Vec<Hit>) {
    for i in finder!(b"eyJ").find_iter(buf) {
        if out
            .last()
            .is_some_and(|h| h.detector == Detector::Jwt && h.range.end > i)
            || !boundary(buf, i.checked_sub(1))
        {
            continue;
        }
        let b64 = b"-_=";
        let h = token_end(buf, i, b64);
        if buf.get(h) != Some(&b'.') || h - i < 10 {
            continue;
        }
        let p = token_end(buf, h + 1, b64);
        if !buf[h + 1..].starts_with(b"eyJ") || buf.get(p) != Some(&b'.') {
            continue;
        }
        let s = token_end(buf, p + 1, b64);
        if s - p < 2 {
            continue;
        }
        out.push(Hit {
            detector: Detector::Jwt,
            range: i..s,
        });
    }
}

/// PEM private keys: the base64 body between the BEGIN and END lines.
pub fn private_keys(buf: &[u8], out: &mut Vec<Hit>) {
    for b in finder!(b"-----BEGIN ").find_iter(buf) {
        let line_end = memchr::memmem::find(&buf[b + 11..], b"-----").map(|p| b + 11 + p + 5);
        let Some(le) = line_end else { continue };
        if !buf[b..le].windows(11).any(|w| w == b"PRIVATE KEY") {
            continue;
        }
        let Some(end) = memchr::memmem::find(&buf[le..], b"-----END ").map(|p| le + p) else {
            // Unterminated: mask to the end of the buffer (fail closed).
            out.push(Hit {
                detector: Detector::PrivateKey,
                range: le..buf.len(),
            });
            continue;
        };
        out.push(Hit {
            detector: Detector::PrivateKey,
            range: le..end,
        });
    }
}

/// Well-known API token prefixes, and `Bearer <token>`.
const API_PREFIXES: &[&[u8]] = &[
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

fn api_prefixes() -> &'static aho_corasick::AhoCorasick {
    static AC: std::sync::OnceLock<aho_corasick::AhoCorasick> = std::sync::OnceLock::new();
    AC.get_or_init(|| {
        aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostFirst)
            .build(API_PREFIXES)
            .expect("static patterns build")
    })
}

pub fn api_keys(buf: &[u8], out: &mut Vec<Hit>) {
    for m in api_prefixes().find_iter(buf) {
        let (i, plen) = (m.start(), m.end() - m.start());
        if !boundary(buf, i.checked_sub(1)) {
            continue;
        }
        let e = token_end(buf, i + plen, b"_-");
        if e - i - plen >= 16 {
            out.push(Hit {
                detector: Detector::ApiKey,
                range: i..e,
            });
        }
    }
}

pub fn bearers(buf: &[u8], out: &mut Vec<Hit>) {
    for i in finder!(b"earer ").find_iter(buf) {
        if i == 0 || !matches!(buf[i - 1], b'B' | b'b') {
            continue;
        }
        let s = i + 6;
        let e = token_end(buf, s, b"-._~+/=");
        if e - s >= 16 {
            out.push(Hit {
                detector: Detector::Bearer,
                range: s..e,
            });
        }
    }
}

/// Runs the enabled detectors over `buf`; hits come back sorted, overlaps removed
/// (the earlier, longer match wins). Reuses `out`: no allocation once warm.
pub fn scan(buf: &[u8], enabled: &[Detector], out: &mut Vec<Hit>) {
    out.clear();
    for d in enabled {
        match d {
            Detector::Email => emails(buf, out),
            Detector::CreditCard => cards(buf, out),
            Detector::Ssn => ssns(buf, out),
            Detector::Phone => phones(buf, out),
            Detector::Iban => ibans(buf, out),
            Detector::Ipv4 => ipv4s(buf, out),
            Detector::Ipv6 => ipv6s(buf, out),
            Detector::AwsKey => aws_keys(buf, out),
            Detector::Jwt => jwts(buf, out),
            Detector::PrivateKey => private_keys(buf, out),
            Detector::Bearer => bearers(buf, out),
            Detector::ApiKey => api_keys(buf, out),
        }
    }
    if out.len() < 2 {
        return;
    }
    out.sort_unstable_by(|a, b| {
        a.range
            .start
            .cmp(&b.range.start)
            .then(b.range.end.cmp(&a.range.end))
    });
    let mut kept = 0;
    for i in 0..out.len() {
        if kept > 0 && out[i].range.start < out[kept - 1].range.end {
            continue;
        }
        out.swap(kept, i);
        kept += 1;
    }
    out.truncate(kept);
}
