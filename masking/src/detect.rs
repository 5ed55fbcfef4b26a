//! Content detectors. One pass classifies the bytes 64 at a time with SIMD
//! ([`crate::classify`]) into the few positions where a value can start: an
//! `@`, a `+`, a `:`, a run of digits joined by single separators that is long
//! enough for a card, SSN, phone or IPv4 address, two capitals (IBAN, AWS key
//! id, `AIza`, `BEGIN`), a `J` after `ey`, an `e` two bytes before `re` (`eare`
//! of `Bearer`), an `_` or `-` after a lowercase letter (inside a token
//! prefix). Only there do the validators run (Luhn, IIN ranges, mod-97,
//! impossible SSN ranges), so text without candidates costs the classification
//! pass and nothing more.
//!
//! Each validator is anchored at the position a value starts (or, for emails
//! and IPv6, at the `@` or `:` inside it) and checks everything itself, so the
//! result equals trying every validator at every byte ([`scan_reference`], the
//! tests' ground truth); the prefilter only decides where to look.
//!
//! A detector reports byte ranges of sensitive values within one buffer; masking
//! them is [`crate::mask`]'s job.

use std::ops::Range;

use crate::classify::{self, Numeric, Window};

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

fn digit_at(buf: &[u8], i: usize) -> bool {
    buf.get(i).is_some_and(u8::is_ascii_digit)
}

/// The enabled detectors as a bit set.
#[derive(Clone, Copy)]
struct Enabled(u16);

impl Enabled {
    fn of(detectors: &[Detector]) -> Enabled {
        Enabled(detectors.iter().fold(0, |s, d| s | 1 << *d as u16))
    }
    fn has(self, d: Detector) -> bool {
        self.0 & (1 << d as u16) != 0
    }
}

/// Up to 20 ASCII digits collected from a run (no allocation).
struct Digits {
    buf: [u8; 20],
    len: usize,
}

impl Digits {
    fn new() -> Digits {
        Digits {
            buf: [0; 20],
            len: 0,
        }
    }
    fn push(&mut self, d: u8) {
        self.buf[self.len] = d;
        self.len += 1;
    }
    fn get(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

// ---- email -------------------------------------------------------------------

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

// ---- digit runs: cards, SSNs, phones ------------------------------------------

/// Luhn checksum over ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    // Every second digit from the right doubled, its digits summed.
    const DOUBLED: [u8; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let mut sum = 0u32;
    let mut double = false;
    for &d in digits.iter().rev() {
        let v = usize::from(d.wrapping_sub(b'0')).min(9);
        sum += u32::from(if double { DOUBLED[v] } else { v as u8 });
        double = !double;
    }
    sum.is_multiple_of(10)
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

/// A card number starting at the digit `i`: 13-19 digits with single spaces or
/// dashes between them, a known issuer range and a valid Luhn check digit. The
/// longest such run wins; when the whole run is not a card, shorter runs ending
/// at a separator are tried (a card followed by a space and an expiry date, a
/// CVV or another number).
fn card_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
    if !digit_at(buf, i) || (i > 0 && is_word(buf[i - 1])) {
        return;
    }
    let mut digits = Digits::new();
    // Where a separator follows a group of a card's length so far: (digits,
    // end); at most seven (13 to 19 digits).
    let mut groups = [(0u8, 0usize); 7];
    let mut n = 0;
    let (mut j, mut end) = (i, i);
    while j < buf.len() && digits.len < 20 {
        let b = buf[j];
        if b.is_ascii_digit() {
            digits.push(b);
            j += 1;
            end = j;
        } else if matches!(b, b' ' | b'-') && j > i && digit_at(buf, j + 1) {
            if (13..=19).contains(&digits.len) {
                groups[n] = (digits.len as u8, j);
                n += 1;
            }
            j += 1;
        } else {
            break;
        }
    }
    let d = digits.get();
    let whole = boundary(buf, Some(end)).then_some((d.len(), end));
    let shorter = groups[..n].iter().rev().map(|&(len, e)| (len as usize, e));
    first_card(d, i, whole.into_iter().chain(shorter), out);
}

/// Of the candidate cards starting at `i` (`(digits, end)`, the longest
/// first), reports the first with a card's length, a known issuer range and a
/// valid check digit.
fn first_card(
    digits: &[u8],
    i: usize,
    candidates: impl Iterator<Item = (usize, usize)>,
    out: &mut Vec<Hit>,
) {
    for (len, e) in candidates {
        if (13..=19).contains(&len) && known_iin(&digits[..len]) && luhn(&digits[..len]) {
            out.push(Hit {
                detector: Detector::CreditCard,
                range: i..e,
            });
            return;
        }
    }
}

/// US SSN `AAA-GG-SSSS` starting at `s`, excluding impossible areas (000, 666,
/// 900-999), group 00 and serial 0000.
fn ssn_at(buf: &[u8], s: usize, out: &mut Vec<Hit>) {
    let Some(cand) = buf.get(s..s + 11) else {
        return;
    };
    let shape = cand.iter().enumerate().all(|(k, &b)| {
        if k == 3 || k == 6 {
            b == b'-'
        } else {
            b.is_ascii_digit()
        }
    });
    if !shape || !boundary(buf, s.checked_sub(1)) || !boundary(buf, Some(s + 11)) {
        return;
    }
    if s > 0 && matches!(buf[s - 1], b'-' | b'.') || matches!(buf.get(s + 11), Some(b'-' | b'.')) {
        return;
    }
    let area = &cand[..3];
    if area == b"000"
        || area == b"666"
        || area[0] == b'9'
        || &cand[4..6] == b"00"
        || &cand[7..] == b"0000"
    {
        return;
    }
    out.push(Hit {
        detector: Detector::Ssn,
        range: s..s + 11,
    });
}

/// An E.164 phone number at the `+` at `plus`: 8-15 digits with spaces,
/// dashes, dots or parentheses.
fn e164_at(buf: &[u8], plus: usize, out: &mut Vec<Hit>) {
    if buf.get(plus) != Some(&b'+') || (plus > 0 && buf[plus - 1].is_ascii_alphanumeric()) {
        return;
    }
    let mut digits = Digits::new();
    let mut i = plus + 1;
    let mut end = i;
    while i < buf.len() && digits.len <= 15 {
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
            b')' if buf[i - 1].is_ascii_digit() && buf.get(i + 1) == Some(&b' ') => i += 1,
            _ => break,
        }
    }
    let d = digits.get();
    if (8..=15).contains(&d.len()) && d[0] != b'0' && boundary(buf, Some(end)) {
        out.push(Hit {
            detector: Detector::Phone,
            range: plus..end,
        });
    }
}

/// A North American number without a country code at `i`: `(AAA) BBB-CCCC`
/// (14 bytes) or `AAA-BBB-CCCC` / `AAA.BBB.CCCC` (12 bytes).
fn na_phone_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
    let parens = buf.get(i) == Some(&b'(');
    let len = if parens { 14 } else { 12 };
    let Some(c) = buf.get(i..i + len) else {
        return;
    };
    let d = |r: Range<usize>| c[r].iter().all(u8::is_ascii_digit);
    let plausible = |area: &[u8], exch: &[u8]| area[0] >= b'2' && exch[0] >= b'2';
    let shape = if parens {
        d(1..4)
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
    };
    if shape
        && boundary(buf, i.checked_sub(1))
        && boundary(buf, Some(i + len))
        && buf.get(i + len) != Some(&b'-')
    {
        out.push(Hit {
            detector: Detector::Phone,
            range: i..i + len,
        });
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

/// An IBAN at `i`: country code, check digits, the country's length (spaces
/// between groups of four allowed) and mod-97.
fn iban_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
    let Some(c) = buf.get(i..i + 15) else {
        return;
    };
    let shape = c[0].is_ascii_uppercase()
        && c[1].is_ascii_uppercase()
        && c[2].is_ascii_digit()
        && c[3].is_ascii_digit();
    if !shape || !boundary(buf, i.checked_sub(1)) {
        return;
    }
    let Some(&(_, want)) = IBAN_LENGTHS.iter().find(|(cc, _)| cc[..] == c[..2]) else {
        return;
    };
    let mut chars = [0u8; 34];
    let mut n = 0;
    let (mut j, mut end) = (i, i);
    while j < buf.len() && n < want {
        let b = buf[j];
        if b.is_ascii_uppercase() || b.is_ascii_digit() {
            chars[n] = b;
            n += 1;
            j += 1;
            end = j;
        } else if b == b' ' && n % 4 == 0 && buf.get(j + 1).is_some_and(u8::is_ascii_alphanumeric) {
            j += 1;
        } else {
            break;
        }
    }
    if n == want && boundary(buf, Some(end)) && iban_mod97(&chars[..n]) {
        out.push(Hit {
            detector: Detector::Iban,
            range: i..end,
        });
    }
}

// ---- network addresses ---------------------------------------------------------

/// A dotted-quad IPv4 address at `i` (not part of a longer dotted version).
fn ipv4_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
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
fn ipv6_at(buf: &[u8], colon: usize, out: &mut Vec<Hit>) -> Option<usize> {
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

// ---- secrets ---------------------------------------------------------------------

fn token_end(buf: &[u8], mut i: usize, extra: &[u8]) -> usize {
    while i < buf.len() && (buf[i].is_ascii_alphanumeric() || extra.contains(&buf[i])) {
        i += 1;
    }
    i
}

/// An AWS access key id (`AKIA`/`ASIA` + 16) at `i`, and a 40-character secret
/// key within 200 bytes after it.
fn aws_key_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
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
fn jwt_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
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
fn private_key_at(buf: &[u8], b: usize, out: &mut Vec<Hit>, ends: &mut (usize, usize)) {
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
fn bearer_at(buf: &[u8], b: usize, out: &mut Vec<Hit>) {
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

/// Where the first `_` or `-` of each prefix is (always after a lowercase
/// letter): an `_` or `-` at `p` can be inside a prefix that starts at `p - k`
/// for these `k`.
const UNDERSCORE_AT: [usize; 3] = [2, 3, 6];
const DASH_AT: [usize; 2] = [4, 5];

/// An API token at `i`: a known prefix then 16 or more token characters.
fn api_key_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
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

// ---- the scan --------------------------------------------------------------------

/// Per-scan state carried between windows.
struct Cursor {
    /// End of the last digit cluster walked (a window can see a cluster's
    /// continuation as a start).
    cluster_end: usize,
    /// End of the last IPv6 address found (its other colons are inside it).
    v6_end: usize,
    /// The last search for a PEM END line (see [`private_key_at`]).
    pem_ends: (usize, usize),
}

/// Runs the enabled detectors over `buf`; hits come back sorted, those wholly
/// inside another dropped (see [`resolve`]). Reuses `out`: no allocation once
/// warm.
pub fn scan(buf: &[u8], enabled: &[Detector], out: &mut Vec<Hit>) {
    out.clear();
    let en = Enabled::of(enabled);
    if en.0 == 0 {
        return;
    }
    let mut cur = Cursor {
        cluster_end: 0,
        v6_end: 0,
        pem_ends: (usize::MAX, 0),
    };
    classify::for_each_window(buf, |b, m| {
        let t = Triggers::of(m);
        if t.any() {
            visit(buf, en, b, &t, &mut cur, out);
        }
    });
    resolve(out);
}

/// Candidate positions in one window (bit `k` is byte `b - 1 + k`).
struct Triggers {
    /// Starts of digit clusters (digits joined by single spaces, dashes or
    /// dots) at least seven bytes long: cards, SSNs, phones, IPv4.
    long: u64,
    /// Checks that start on the byte itself ([`classify::Window::single`]).
    single: u64,
}

impl Triggers {
    #[inline(always)]
    fn of(w: &Window) -> Triggers {
        let report = w.report;
        let d = w.digit;
        let c = d | (w.joiner & (d << 1) & (d >> 1));
        let r2 = c & (c >> 1);
        let r4 = r2 & (r2 >> 2);
        let r7 = r4 & (r4 >> 3);
        Triggers {
            long: c & !(c << 1) & r7 & report,
            single: w.single & report,
        }
    }

    #[inline(always)]
    fn any(&self) -> bool {
        self.long | self.single != 0
    }
}

#[inline(never)]
fn visit(buf: &[u8], en: Enabled, b: usize, t: &Triggers, cur: &mut Cursor, out: &mut Vec<Hit>) {
    use Detector as D;
    // In position order, so hits mostly come out sorted.
    let mut all = t.long | t.single;
    while all != 0 {
        let k = all.trailing_zeros();
        all &= all - 1;
        let (bit, p) = (1u64 << k, b + k as usize - 1);
        if t.long & bit != 0 && p >= cur.cluster_end {
            cur.cluster_end = cluster(buf, p, en, out);
        }
        if t.single & bit == 0 {
            continue;
        }
        // The byte tells which check the trigger was for.
        match buf[p] {
            b'A'..=b'Z' => {
                let w = &buf[p..];
                if en.has(D::AwsKey) && (w.starts_with(b"AKIA") || w.starts_with(b"ASIA")) {
                    aws_key_at(buf, p, out);
                }
                if en.has(D::ApiKey) && w.starts_with(b"AIza") {
                    api_key_at(buf, p, out);
                }
                if en.has(D::PrivateKey) && p >= 5 && w.starts_with(b"BEGIN ") {
                    private_key_at(buf, p - 5, out, &mut cur.pem_ends);
                }
                if en.has(D::Iban) && digit_at(buf, p + 2) && digit_at(buf, p + 3) {
                    iban_at(buf, p, out);
                }
                if buf[p] == b'J' && en.has(D::Jwt) && p >= 2 && &buf[p - 2..p] == b"ey" {
                    jwt_at(buf, p - 2, out);
                }
            }
            b'e' if en.has(D::Bearer) && p >= 1 => bearer_at(buf, p - 1, out),
            b'_' | b'-' if en.has(D::ApiKey) => {
                let offsets: &[usize] = if buf[p] == b'_' {
                    &UNDERSCORE_AT
                } else {
                    &DASH_AT
                };
                for &k in offsets.iter().filter(|&&k| p >= k) {
                    api_key_at(buf, p - k, out);
                }
            }
            b'@' if en.has(D::Email) => email_at(buf, p, out),
            b'+' if en.has(D::Phone) => e164_at(buf, p, out),
            b'(' if en.has(D::Phone) => na_phone_at(buf, p, out),
            b':' if en.has(D::Ipv6) && p >= cur.v6_end => {
                if let Some(e) = ipv6_at(buf, p, out) {
                    cur.v6_end = e;
                }
            }
            _ => {}
        }
    }
}

/// Finds the digit cluster starting at `p` and tries the digit detectors at
/// each group start where the group's shape allows them (every value they find
/// starts at one); returns the cluster's end. Reads the cluster's shape from
/// bit masks of the 64 bytes at `p`; a longer cluster is walked byte by byte.
fn cluster(buf: &[u8], p: usize, en: Enabled, out: &mut Vec<Hit>) -> usize {
    use Detector as D;
    let n = Numeric::at(buf, p);
    let d = n.digit;
    let c = d | ((n.space_dash | n.dot) & (d << 1) & (d >> 1));
    // Bit `i < 63` of `c` is exact (it looks at bit `i + 1`).
    let len = c.trailing_ones() as usize;
    if len >= 63 {
        return cluster_walk(buf, p, en, out);
    }
    let d = d & ((1u64 << len) - 1);
    let mut starts = d & !(d << 1);
    while starts != 0 {
        let s = starts.trailing_zeros() as usize;
        starts &= starts - 1;
        let group = (d >> s).trailing_ones() as usize;
        let (at, next) = (p + s, buf.get(p + s + group).copied());
        // A card needs 13 digits up to the cluster's end.
        if en.has(D::CreditCard) && (d >> s).count_ones() >= 13 {
            card_masked(buf, p, &n, s, out);
        }
        group_at(buf, at, group, next, en, out);
    }
    p + len
}

/// The detectors other than cards that can start at a group of `len` digits
/// at `at`, followed by `next`.
fn group_at(buf: &[u8], at: usize, len: usize, next: Option<u8>, en: Enabled, out: &mut Vec<Hit>) {
    use Detector as D;
    if len == 3 && en.has(D::Ssn) && next == Some(b'-') {
        ssn_at(buf, at, out);
    }
    if len == 3 && en.has(D::Phone) && matches!(next, Some(b'-' | b'.')) {
        na_phone_at(buf, at, out);
    }
    if len <= 3 && en.has(D::Ipv4) && next == Some(b'.') {
        ipv4_at(buf, at, out);
    }
}

/// [`card_at`] at byte `p + s`, read from the masks `n` of the 64 bytes at `p`
/// (the caller's cluster, which holds the card's run, ends inside them).
fn card_masked(buf: &[u8], p: usize, n: &Numeric, s: usize, out: &mut Vec<Hit>) {
    let i = p + s;
    if i > 0 && is_word(buf[i - 1]) {
        return;
    }
    // The run from `i`: digits joined by single spaces or dashes.
    let d = n.digit;
    let run_bits = (d | (n.space_dash & (d << 1) & (d >> 1))) >> s;
    let run = run_bits.trailing_ones() as usize;
    // The caller's cluster (under 63 bytes) holds the run.
    debug_assert!(s + run < 63);
    let digits_at = (d >> s) & ((1u64 << run) - 1);
    // Its first 20 digits (a run of more is no card, but a shorter card may
    // end at a separator within them).
    let mut digits = [0u8; 20];
    let mut k = 0;
    let mut rest = digits_at;
    while rest != 0 && k < 20 {
        digits[k] = buf[i + rest.trailing_zeros() as usize];
        rest &= rest - 1;
        k += 1;
    }
    let whole = (k <= 19 && boundary(buf, Some(i + run))).then_some((k, i + run));
    // Separators after 13 to 19 digits, the last first.
    let mut seps = !digits_at & ((1u64 << run) - 1);
    let shorter = std::iter::from_fn(|| loop {
        if seps == 0 {
            return None;
        }
        let q = 63 - seps.leading_zeros() as usize;
        seps &= !(1u64 << q);
        let before = (digits_at & ((1u64 << q) - 1)).count_ones() as usize;
        if (13..=19).contains(&before) {
            return Some((before, i + q));
        }
    });
    first_card(&digits, i, whole.into_iter().chain(shorter), out);
}

/// [`cluster`] for a cluster longer than its masks: walks it byte by byte.
fn cluster_walk(buf: &[u8], p: usize, en: Enabled, out: &mut Vec<Hit>) -> usize {
    use Detector as D;
    // Groups as (start, digits), up to this many at a time.
    let mut groups = [(0u32, 0u32); 8];
    let mut i = p;
    loop {
        let mut n = 0;
        let more = loop {
            let s = i;
            while digit_at(buf, i) {
                i += 1;
            }
            groups[n] = ((s - p) as u32, (i - s) as u32);
            n += 1;
            if !(matches!(buf.get(i), Some(b' ' | b'-' | b'.')) && digit_at(buf, i + 1)) {
                break false;
            }
            i += 1;
            if n == groups.len() {
                break true;
            }
        };
        // Digits from each group to the cluster's end (a card needs 13); when
        // the cluster goes on past these groups, every group may start one.
        let mut after = if more { 13 } else { 0 };
        for &(s, len) in groups[..n].iter().rev() {
            let (s, len) = (p + s as usize, len as usize);
            after += len;
            let next = buf.get(s + len).copied();
            if en.has(D::CreditCard) && after >= 13 {
                card_at(buf, s, out);
            }
            group_at(buf, s, len, next, en, out);
        }
        if !more {
            return i;
        }
    }
}

/// Sorts hits (by start, then the longer value, then the detector listed
/// first) and drops those that lie wholly inside an earlier one. Finds that
/// only partly overlap are both kept: each is masked in its own shape, and
/// since masking only ever hides bytes, no byte of either stays in clear.
fn resolve(out: &mut Vec<Hit>) {
    if out.len() < 2 {
        return;
    }
    let key = |h: &Hit| (h.range.start, std::cmp::Reverse(h.range.end), h.detector);
    // Hits mostly arrive in order: check before sorting, and sort stably (runs
    // already in order cost a pass).
    if !out.is_sorted_by_key(key) {
        out.sort_by_key(key);
    }
    let mut kept = 0;
    let mut reach = 0;
    for i in 0..out.len() {
        // Sorted by start: a hit ending inside the furthest-reaching kept hit
        // lies wholly inside it.
        if out[i].range.end <= reach && kept > 0 {
            continue;
        }
        reach = reach.max(out[i].range.end);
        out.swap(kept, i);
        kept += 1;
    }
    out.truncate(kept);
}

/// Every enabled validator at every byte: what [`scan`] must find, without its
/// prefilter (slow; for tests and fuzzing).
pub fn scan_reference(buf: &[u8], enabled: &[Detector], out: &mut Vec<Hit>) {
    out.clear();
    let mut pem_ends = (usize::MAX, 0);
    for p in 0..buf.len() {
        for d in enabled {
            match d {
                Detector::Email => email_at(buf, p, out),
                Detector::CreditCard => card_at(buf, p, out),
                Detector::Ssn => ssn_at(buf, p, out),
                Detector::Phone => {
                    e164_at(buf, p, out);
                    na_phone_at(buf, p, out);
                }
                Detector::Iban => iban_at(buf, p, out),
                Detector::Ipv4 => ipv4_at(buf, p, out),
                Detector::Ipv6 => {
                    ipv6_at(buf, p, out);
                }
                Detector::AwsKey => aws_key_at(buf, p, out),
                Detector::Jwt => jwt_at(buf, p, out),
                Detector::PrivateKey => private_key_at(buf, p, out, &mut pem_ends),
                Detector::Bearer => bearer_at(buf, p, out),
                Detector::ApiKey => api_key_at(buf, p, out),
            }
        }
    }
    resolve(out);
}
