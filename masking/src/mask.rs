//! Mask styles. Every style keeps the value's length, so a value is masked in
//! place in the buffer it arrived in (no copy, no re-framing), in a `DataRow`, a
//! JSON string or a text stream alike.

use std::ops::Range;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::detect::Detector;
use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Same length, shape kept: `j***@*****.com`, `***-**-****`.
    Redact,
    /// Everything but the last four digits or characters: `****-****-****-1234`.
    Last4,
    /// Every byte becomes `*`.
    Full,
    /// A keyed, deterministic pseudonym of the same shape: every digit becomes
    /// a digit, every letter a letter (non-ASCII characters become letters),
    /// punctuation stays. The same value under the same key always gives the
    /// same pseudonym, so joins and group-bys across results keep working;
    /// without the key it cannot be reversed or recomputed.
    Hash(HashKey),
}

/// The key of the `hash` style, derived from the configured secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HashKey([u8; 32]);

impl HashKey {
    pub fn derive(secret: &[u8]) -> HashKey {
        let mut h = Sha256::new();
        h.update(b"sluice mask hash v1\0");
        h.update(secret);
        HashKey(h.finalize().into())
    }

    /// HMAC-SHA-256(key, domain ‖ v): the seed of a value's keystream.
    fn seed(&self, domain: &[u8], v: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(domain);
        mac.update(v);
        mac.finalize().into_bytes().into()
    }

    /// Replaces every byte of `v` with keyed pseudo-random bytes seeded by
    /// HMAC-SHA-256(key, v): the `hash` style for a value with no text to keep
    /// the shape of (a binary integer). Deterministic, so joins still line up.
    pub fn scramble(&self, v: &mut [u8]) {
        let seed = self.seed(b"binary\0", v);
        for (i, chunk) in v.chunks_mut(32).enumerate() {
            chunk.copy_from_slice(&block(&seed, i as u64)[..chunk.len()]);
        }
    }
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(..)")
    }
}

impl Style {
    /// The styles that need no key (`hash` needs one: see [`Style::parse`]).
    pub fn from_name(name: &str) -> Option<Style> {
        Some(match name {
            "redact" => Style::Redact,
            "last4" => Style::Last4,
            "full" => Style::Full,
            _ => return None,
        })
    }

    /// Any style by name; `hash` takes `key`. `Err` says what is missing.
    pub fn parse(name: &str, key: Option<HashKey>) -> Result<Style, Error> {
        match (name, key) {
            ("hash", Some(k)) => Ok(Style::Hash(k)),
            ("hash", None) => Err(Error::HashWithoutKey),
            _ => Style::from_name(name).ok_or_else(|| Error::UnknownStyle(name.to_owned())),
        }
    }
}

/// Replaces every letter and digit of `v` (and every byte of a non-ASCII
/// character) from a keystream seeded by HMAC-SHA-256(key, v).
fn pseudonym(v: &mut [u8], key: &HashKey) {
    let seed = key.seed(b"", v);
    let mut stream = seed;
    let mut counter = 0u64;
    let mut at = 0;
    for b in v.iter_mut() {
        let (base, n) = match *b {
            b'0'..=b'9' => (b'0', 10),
            b'a'..=b'z' => (b'a', 26),
            b'A'..=b'Z' => (b'A', 26),
            0x80.. => (b'a', 26),
            _ => continue,
        };
        if at == stream.len() {
            counter += 1;
            stream = block(&seed, counter);
            at = 0;
        }
        *b = base + stream[at] % n;
        at += 1;
    }
}

/// Block `n` of a keystream: SHA-256(seed ‖ n).
fn block(seed: &[u8; 32], n: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(n.to_le_bytes());
    h.finalize().into()
}

/// Masks `buf[range]` in place as a value found by `detector`.
pub fn apply(buf: &mut [u8], range: Range<usize>, detector: Option<Detector>, style: Style) {
    let v = &mut buf[range];
    match style {
        Style::Hash(key) => pseudonym(v, &key),
        Style::Full => v.fill(b'*'),
        Style::Last4 => {
            // Keep the last four alphanumerics (and separators as they are).
            let mut left = 4;
            let cut = v
                .iter()
                .rposition(|b| {
                    left -= usize::from(b.is_ascii_alphanumeric());
                    left == 0
                })
                .unwrap_or(0);
            for b in &mut v[..cut] {
                *b = if b.is_ascii_alphanumeric() { b'*' } else { *b };
            }
        }
        Style::Redact => match detector {
            Some(Detector::Email) => {
                // First character of the local part and the TLD stay: j***@*****.com
                let at = memchr::memchr(b'@', v).unwrap_or(v.len());
                let dot = memchr::memrchr(b'.', v)
                    .filter(|&d| d > at)
                    .unwrap_or(v.len());
                v[1.min(at)..at].fill(b'*');
                if at < v.len() {
                    v[at + 1..dot].fill(b'*');
                }
            }
            Some(Detector::CreditCard) => apply(v, 0..v.len(), None, Style::Last4),
            _ => {
                // Keep separators and punctuation, hide letters and digits
                // (a select, not a branch: the compiler vectorises it).
                for b in v.iter_mut() {
                    *b = if b.is_ascii_alphanumeric() || *b >= 0x80 {
                        b'*'
                    } else {
                        *b
                    };
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(s: &str, d: Option<Detector>, style: Style) -> String {
        let mut b = s.as_bytes().to_vec();
        let n = b.len();
        apply(&mut b, 0..n, d, style);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn styles_keep_length_and_shape() {
        assert_eq!(
            masked("jane.doe@example.com", Some(Detector::Email), Style::Redact),
            "j*******@*******.com"
        );
        assert_eq!(
            masked(
                "4111-1111-1111-1234",
                Some(Detector::CreditCard),
                Style::Redact
            ),
            "****-****-****-1234"
        );
        assert_eq!(
            masked("078-05-1120", Some(Detector::Ssn), Style::Redact),
            "***-**-****"
        );
        assert_eq!(
            masked("078-05-1120", Some(Detector::Ssn), Style::Last4),
            "***-**-1120"
        );
        assert_eq!(masked("secret", None, Style::Full), "******");
    }

    #[test]
    fn hash_is_a_keyed_deterministic_pseudonym_of_the_same_shape() {
        let k1 = Style::Hash(HashKey::derive(b"0123456789abcdef-one"));
        let k2 = Style::Hash(HashKey::derive(b"0123456789abcdef-two"));
        let a = masked("jane.doe@example.com", None, k1);
        assert_eq!(a, masked("jane.doe@example.com", None, k1), "deterministic");
        assert_ne!(a, masked("jane.doe@example.com", None, k2), "keyed");
        assert_ne!(a, masked("jane.dof@example.com", None, k1));
        assert_eq!(a.len(), 20);
        assert_eq!(
            (a.find('@'), a.find('.'), a.rfind('.')),
            (Some(8), Some(4), Some(16))
        );
        assert!(!a.contains("jane") && !a.contains("example"), "{a}");
        let card = masked("4111 1111 1111 1111", None, k1);
        assert!(
            card.chars().all(|c| c.is_ascii_digit() || c == ' '),
            "{card}"
        );
        assert_eq!(card.matches(' ').count(), 3);
        // Non-ASCII text stays valid UTF-8 of the same byte length.
        let n = masked("José Müller", None, k1);
        assert_eq!(n.len(), "José Müller".len());
        assert!(n.is_ascii(), "{n}");
        // Long values use more than one keystream block.
        let long = "x".repeat(100);
        let h = masked(&long, None, k1);
        assert_ne!(&h[..32], &h[32..64]);
        assert_eq!(format!("{:?}", HashKey::derive(b"k")), "HashKey(..)");
        // Binary values: keyed, deterministic, nothing of the value left.
        let key = HashKey::derive(b"0123456789abcdef-one");
        let (mut a, mut b) = (42i64.to_be_bytes(), 42i64.to_be_bytes());
        key.scramble(&mut a);
        key.scramble(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, 42i64.to_be_bytes());
        let mut c = 43i64.to_be_bytes();
        key.scramble(&mut c);
        assert_ne!(a, c);
        let mut long = [7u8; 70];
        key.scramble(&mut long);
        assert_ne!(long[..32], long[32..64]);
        assert_eq!(
            Style::parse("hash", None).unwrap_err().to_string(),
            "mask style `hash` needs a key (hash_key_env)"
        );
        assert_eq!(
            Style::parse("bogus", None),
            Err(Error::UnknownStyle("bogus".into()))
        );
        assert_eq!(
            Style::parse("bogus", None).unwrap_err().to_string(),
            "mask style `bogus` is not available"
        );
    }
}
