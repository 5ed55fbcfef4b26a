//! Custom entities from configuration: a regular expression with an optional
//! checksum (`luhn`, `mod97`), e.g. employee ids or internal account numbers.
//!
//! A pattern must have a bounded length of at most [`MAX_ENTITY_LEN`] bytes
//! (checked on its syntax tree), so the streaming masker finds a value split
//! across chunks exactly as if it came whole, and a pattern that can match the
//! empty string is refused.

use std::ops::Range;
use std::sync::Mutex;

use regex::bytes::{Regex, RegexBuilder};

use crate::detect::{iban_mod97, luhn};
use crate::Error;

/// Longest value a custom entity may match: the streaming masker's window.
pub const MAX_ENTITY_LEN: usize = crate::stream::WINDOW;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    None,
    /// The match's digits pass the Luhn check (card-like numbers).
    Luhn,
    /// The match's letters and digits pass ISO 7064 mod-97 (IBAN-like).
    Mod97,
}

/// One custom entity.
#[derive(Debug, Clone)]
pub struct Entity {
    pub name: &'static str,
    re: Regex,
    validator: Validator,
    /// A secret the gateway itself holds (an injected credential): found
    /// before the detectors (which would otherwise mask parts of it and hide
    /// the rest from this pattern), and hidden whole (`Style::Full`).
    pub secret: bool,
    /// The longest match the pattern can have (at most [`MAX_ENTITY_LEN`]).
    max_len: usize,
}

/// Shortest secret worth looking for: shorter ones would mask ordinary text.
pub const MIN_SECRET_LEN: usize = 6;

/// The piece a long secret is looked for in (each byte's widest escaped form
/// is 7 bytes, `&#0126;`, so a piece's pattern stays within the stream window).
pub const SECRET_PIECE: usize = 96;

/// The pattern of one secret (or piece): each byte as it is or in the forms
/// an echo may carry it in.
fn secret_pattern(secret: &[u8]) -> String {
    let mut p = String::new();
    for &b in secret {
        if b.is_ascii_alphanumeric() {
            p.push(b as char);
            continue;
        }
        let mut forms = vec![
            format!(r"\x{b:02x}"),
            format!("%{b:02X}"),
            format!("%{b:02x}"),
        ];
        if b < 0x80 {
            forms.extend([
                format!(r"\\u00{b:02X}"),
                format!(r"\\u00{b:02x}"),
                format!("&#{b};"),
                format!("&#0{b};"),
                format!("&#[xX]{b:02x};"),
                format!("&#[xX]{b:02X};"),
            ]);
            let named: &[&str] = match b {
                b'&' => &["&amp;"],
                b'"' => &["&quot;", r"\\\x22"],
                b'\'' => &["&apos;"],
                b'<' => &["&lt;"],
                b'>' => &["&gt;"],
                b'/' => &[r"\\/"],
                b'\\' => &[r"\\\\"],
                _ => &[],
            };
            forms.extend(named.iter().map(|s| s.to_string()));
        }
        p.push_str(&format!("(?:{})", forms.join("|")));
    }
    p
}

impl Entity {
    /// `Err` says what is wrong with the pattern or the validator.
    pub fn new(name: &str, pattern: &str, validator: &str) -> Result<Entity, Error> {
        let validator = match validator {
            "none" => Validator::None,
            "luhn" => Validator::Luhn,
            "mod97" => Validator::Mod97,
            v => return Err(Error::UnknownValidator(v.to_owned())),
        };
        let invalid = |reason: &dyn std::fmt::Display| Error::InvalidPattern {
            pattern: pattern.to_owned(),
            reason: reason.to_string(),
        };
        let hir = regex_syntax::parse(pattern).map_err(|e| invalid(&e))?;
        let max_len = match hir.properties().maximum_len() {
            Some(n) if n <= MAX_ENTITY_LEN => n,
            _ => {
                return Err(Error::UnboundedPattern {
                    pattern: pattern.to_owned(),
                    max: MAX_ENTITY_LEN,
                })
            }
        };
        if hir.properties().minimum_len() == Some(0) {
            return Err(Error::EmptyMatch {
                pattern: pattern.to_owned(),
            });
        }
        let re = RegexBuilder::new(pattern)
            .size_limit(1 << 22)
            .build()
            .map_err(|e| invalid(&e))?;
        Ok(Entity {
            name: intern(name),
            re,
            validator,
            secret: false,
            max_len,
        })
    }

    /// Finds any of `secrets` as it might be reflected back: as it is, with
    /// any of its other bytes percent-encoded (either case), JSON-escaped
    /// (`\u002b`, `\/`, `\"`, `\\`) or HTML-escaped (`&#43;`, `&#x2b;`,
    /// `&quot;`, `&amp;`, ...). Secrets shorter than [`MIN_SECRET_LEN`] are
    /// left out (`Ok(None)` when none is left). A secret whose pattern would
    /// not fit the stream window is looked for in pieces of
    /// [`SECRET_PIECE`] bytes, each hidden where found, so no part of an
    /// echo stays in clear. An `Err` does not carry the pattern (it spells
    /// the secrets).
    pub fn secrets(name: &str, secrets: &[&[u8]]) -> Result<Option<Entity>, Error> {
        let mut alternatives = Vec::new();
        for secret in secrets {
            if secret.len() < MIN_SECRET_LEN {
                continue;
            }
            let widest: usize = secret
                .iter()
                .map(|b| if b.is_ascii_alphanumeric() { 1 } else { 7 })
                .sum();
            let pieces: Vec<&[u8]> = if widest <= MAX_ENTITY_LEN {
                vec![secret]
            } else {
                let mut p: Vec<&[u8]> = secret.chunks(SECRET_PIECE).collect();
                if p.len() > 1 && p.last().is_some_and(|l| l.len() < MIN_SECRET_LEN) {
                    let n = p.len();
                    let start = (n - 2) * SECRET_PIECE;
                    p.truncate(n - 2);
                    p.push(&secret[start..]);
                }
                p
            };
            for piece in pieces {
                alternatives.push(secret_pattern(piece));
            }
        }
        if alternatives.is_empty() {
            return Ok(None);
        }
        // Longest first, so a secret containing another is hidden whole.
        alternatives.sort_by_key(|a| std::cmp::Reverse(a.len()));
        alternatives.dedup();
        let pattern = format!("(?-u:{})", alternatives.join("|"));
        let mut e = Entity::new(name, &pattern, "none").map_err(without_pattern)?;
        e.secret = true;
        Ok(Some(e))
    }

    /// The longest match the pattern can have, in bytes: a match starting
    /// this far before the end of a stream's held bytes is final.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Appends the ranges of valid matches in `buf`.
    pub fn find(&self, buf: &[u8], out: &mut Vec<Range<usize>>) {
        for m in self.re.find_iter(buf) {
            if self.valid(m.as_bytes()) {
                out.push(m.range());
            }
        }
    }

    fn valid(&self, v: &[u8]) -> bool {
        match self.validator {
            Validator::None => true,
            Validator::Luhn => {
                let digits: Vec<u8> = v.iter().copied().filter(u8::is_ascii_digit).collect();
                digits.len() >= 2 && luhn(&digits)
            }
            Validator::Mod97 => {
                let chars: Vec<u8> = v
                    .iter()
                    .filter(|b| b.is_ascii_alphanumeric())
                    .map(u8::to_ascii_uppercase)
                    .collect();
                chars.len() >= 5 && iban_mod97(&chars)
            }
        }
    }
}

/// `e` with the pattern it carries blanked: a secret's pattern spells the
/// secret, which no log may show (the messages never include it).
fn without_pattern(e: Error) -> Error {
    let hidden = || "(secret)".to_owned();
    match e {
        Error::InvalidPattern { reason, .. } => Error::InvalidPattern {
            pattern: hidden(),
            reason,
        },
        Error::UnboundedPattern { max, .. } => Error::UnboundedPattern {
            pattern: hidden(),
            max,
        },
        Error::EmptyMatch { .. } => Error::EmptyMatch { pattern: hidden() },
        other => other,
    }
}

/// Entity names live as long as the process (counts and audit records carry
/// them as `&'static str`); each distinct configured name is kept once.
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let n: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.push(n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` fed in two pieces, cut at every byte, streams out as `whole`.
    fn assert_every_split_masks_as(profile: &crate::Profile, text: &[u8], whole: &[u8]) {
        for cut in 0..=text.len() {
            let mut s = crate::StreamMasker::new(profile.clone());
            let mut out = Vec::new();
            s.feed(&text[..cut], &mut out);
            s.feed(&text[cut..], &mut out);
            s.finish(&mut out);
            assert_eq!(out, whole, "split at {cut}");
        }
    }

    #[test]
    fn patterns_are_bounded_and_validated() {
        assert!(Entity::new("e", "EMP-[0-9]{6}", "none").is_ok());
        let e = Entity::new("e", "EMP-[0-9]+", "none").unwrap_err();
        assert_eq!(
            e.to_string(),
            "pattern can match more than 1024 bytes: bound its repetitions (e.g. `{1,64}` instead of `+`)"
        );
        assert!(
            matches!(e, Error::UnboundedPattern { pattern, max: 1024 } if pattern == "EMP-[0-9]+")
        );
        assert_eq!(
            Entity::new("e", "x?", "none").unwrap_err().to_string(),
            "pattern can match the empty string"
        );
        let e = Entity::new("e", "(", "none").unwrap_err();
        assert!(e.to_string().starts_with("invalid pattern: "), "{e}");
        assert!(matches!(e, Error::InvalidPattern { pattern, .. } if pattern == "("));
        assert_eq!(
            Entity::new("e", "a", "crc").unwrap_err(),
            Error::UnknownValidator("crc".into())
        );
        assert_eq!(
            Entity::new("e", "a", "crc").unwrap_err().to_string(),
            "unknown validator `crc`: expected none, luhn or mod97"
        );
        // A secret's pattern never shows, not even in `Debug`.
        let e = without_pattern(Entity::new("e", "hunter2{2000}", "none").unwrap_err());
        assert!(!format!("{e:?}").contains("hunter"), "{e:?}");
        let card = Entity::new("acct", r"ACCT[0-9]{8}", "luhn").unwrap();
        let mut out = Vec::new();
        // 79927398713 style: 12345674 passes Luhn, 12345678 does not.
        card.find(b"ACCT12345674 ACCT12345678", &mut out);
        assert_eq!(out, vec![0..12]);
        assert_eq!(intern("acct").as_ptr(), card.name.as_ptr(), "interned once");
    }

    #[test]
    fn secrets_are_hidden_whole_in_every_reflected_form_and_split() {
        let key = b"sk_live/4111111111111111+Zz=";
        let e = Entity::secrets("credential", &[key, b"short"])
            .unwrap()
            .unwrap();
        // The card inside the secret must not let the detector mask part of
        // it first and leave the rest in clear.
        let profile = crate::Profile::new(&["credit_card"], &[])
            .unwrap()
            .with_entities(vec![e]);
        let forms: [&[u8]; 5] = [
            key,
            b"sk_live%2F4111111111111111%2BZz%3D",
            b"sk_live%2f4111111111111111%2bZz%3d",
            br"sk_live\/4111111111111111\u002BZz\u003d",
            b"sk_live/4111111111111111+Zz=",
        ];
        for form in forms {
            let text = [b"echo: ".as_slice(), form, b" (short stays)"].concat();
            let mut whole = text.clone();
            let mut m = crate::Masker::new(profile.clone());
            m.mask_value(&mut whole, None);
            let hidden = "*".repeat(form.len());
            assert_eq!(
                String::from_utf8_lossy(&whole),
                format!("echo: {hidden} (short stays)"),
                "{}",
                String::from_utf8_lossy(form)
            );
            assert_eq!(m.counts.pairs(), vec![("credential", 1)]);
            assert_every_split_masks_as(&profile, &text, &whole);
            // Byte by byte.
            let mut s = crate::StreamMasker::new(profile.clone());
            let mut out = Vec::new();
            for b in &text {
                s.feed(std::slice::from_ref(b), &mut out);
            }
            s.finish(&mut out);
            assert_eq!(out, whole);
        }
        assert!(Entity::secrets("credential", &[b"tiny"]).unwrap().is_none());
        // HTML and JSON escapes of quotes and backslashes.
        let tricky = br#"Tr0ub&d"or\3/x"#;
        let e = Entity::secrets("credential", &[tricky]).unwrap().unwrap();
        let p = crate::Profile::new(&[], &[])
            .unwrap()
            .with_entities(vec![e]);
        for form in [
            &br#"Tr0ub&d"or\3/x"#[..],
            br#"Tr0ub&amp;d&quot;or\3&#x2F;x"#,
            br#"Tr0ub\u0026d\"or\\3\/x"#,
            br#"Tr0ub&#38;d&#34;or&#92;3&#47;x"#,
            b"Tr0ub%26d%22or%5C3%2Fx",
        ] {
            let mut v = form.to_vec();
            crate::Masker::new(p.clone()).mask_value(&mut v, None);
            assert!(
                v.iter().all(|&b| b == b'*'),
                "{}",
                String::from_utf8_lossy(form)
            );
        }
        // A long secret (a JWT) is looked for in pieces: no part stays in clear,
        // however it is split.
        let long: Vec<u8> = (0..700).map(|i| b"abcdefghij-_.XYZ"[i % 16]).collect();
        let e = Entity::secrets("credential", &[&long]).unwrap().unwrap();
        let p = crate::Profile::new(&[], &[])
            .unwrap()
            .with_entities(vec![e]);
        let text = [b"token: ".as_slice(), &long, b" end"].concat();
        for cut in (0..text.len()).step_by(37) {
            let mut s = crate::StreamMasker::new(p.clone());
            let mut out = Vec::new();
            s.feed(&text[..cut], &mut out);
            s.feed(&text[cut..], &mut out);
            s.finish(&mut out);
            assert!(out.starts_with(b"token: ") && out.ends_with(b" end"));
            assert!(
                out[7..out.len() - 4].iter().all(|&b| b == b'*'),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn custom_entities_mask_whole_values_and_streams_split_anywhere_alike() {
        let profile = crate::Profile::new(&["email"], &[])
            .unwrap()
            .with_entities(vec![
                Entity::new("employee_id", "EMP-[0-9]{6}", "none").unwrap(),
                Entity::new("account", r"ACCT[0-9]{8}", "luhn").unwrap(),
            ]);
        let text =
            b"id EMP-123456 owns ACCT12345674 (not ACCT12345678), mail jo@example.com; EMP-654321.";
        let mut whole = text.to_vec();
        let mut m = crate::Masker::new(profile.clone());
        assert_eq!(m.mask_value(&mut whole, None), 4);
        assert_eq!(
            String::from_utf8_lossy(&whole),
            "id ***-****** owns ************ (not ACCT12345678), mail j*@*******.com; ***-******."
        );
        assert_eq!(
            m.counts.pairs(),
            vec![("email", 1), ("employee_id", 2), ("account", 1)]
        );
        assert_every_split_masks_as(&profile, text, &whole);
        // Longer than the window, fed in chunks of many sizes: values cross
        // the points where the stream releases bytes.
        let long: Vec<u8> = text.repeat(40);
        let mut whole = long.clone();
        crate::Masker::new(profile.clone()).mask_value(&mut whole, None);
        for size in [1, 7, 13, 64, 333, 1000] {
            let mut s = crate::StreamMasker::new(profile.clone());
            let mut out = Vec::new();
            for chunk in long.chunks(size) {
                s.feed(chunk, &mut out);
            }
            s.finish(&mut out);
            assert_eq!(out, whole, "chunks of {size}");
            assert_eq!(s.masker().counts.pairs().len(), 3);
        }
    }
}
