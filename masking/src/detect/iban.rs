//! IBANs: country lengths (ISO 13616) and the mod-97 check (ISO 7064).

use super::{boundary, Detector, Hit};

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
pub(super) fn iban_at(buf: &[u8], i: usize, out: &mut Vec<Hit>) {
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
