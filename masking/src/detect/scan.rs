//! The scan: the prefilter's candidate positions ([`crate::classify`]), the
//! validators run only there, overlapping finds resolved, and the reference
//! scan that tries every validator at every byte.

use super::email::email_at;
use super::iban::iban_at;
use super::network::{ipv4_at, ipv6_at};
use super::numbers::{card_at, e164_at, first_card, na_phone_at, ssn_at};
use super::secrets::{
    api_key_at, aws_key_at, bearer_at, jwt_at, private_key_at, DASH_AT, UNDERSCORE_AT,
};
use super::{boundary, digit_at, is_word, Detector, Enabled, Hit};
use crate::classify::{self, Numeric, Window};
use crate::Isa;

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
/// inside another dropped (see `resolve`). Reuses `out`: no allocation once
/// warm. The prefilter runs on the best instruction set the CPU has
/// ([`Isa::detect`], memoised); [`scan_on`] takes it from the caller.
pub fn scan(buf: &[u8], enabled: &[Detector], out: &mut Vec<Hit>) {
    scan_on(Isa::detect(), buf, enabled, out)
}

/// [`scan`] with the prefilter on `isa` (every path finds the same: see
/// [`scan_reference`]).
pub fn scan_on(isa: Isa, buf: &[u8], enabled: &[Detector], out: &mut Vec<Hit>) {
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
    classify::for_each_window_on(isa, buf, |b, m| {
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
