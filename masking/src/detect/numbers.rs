//! Digit runs: card numbers (Luhn, issuer ranges), US SSNs and phone numbers
//! (E.164 and North American).

use std::ops::Range;

use super::{boundary, digit_at, is_word, Detector, Digits, Hit};

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
pub(super) fn card_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
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
pub(super) fn first_card(
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
pub(super) fn ssn_at(buf: &[u8], s: usize, out: &mut Vec<Hit>) {
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
pub(super) fn e164_at(buf: &[u8], plus: usize, out: &mut Vec<Hit>) {
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
pub(super) fn na_phone_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
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
