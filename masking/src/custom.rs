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
}

impl Entity {
    /// `Err` says what is wrong with the pattern or the validator.
    pub fn new(name: &str, pattern: &str, validator: &str) -> Result<Entity, String> {
        let validator = match validator {
            "none" => Validator::None,
            "luhn" => Validator::Luhn,
            "mod97" => Validator::Mod97,
            v => {
                return Err(format!(
                    "unknown validator `{v}`: expected none, luhn or mod97"
                ))
            }
        };
        let hir = regex_syntax::parse(pattern).map_err(|e| format!("invalid pattern: {e}"))?;
        match hir.properties().maximum_len() {
            Some(n) if n <= MAX_ENTITY_LEN => {}
            _ => {
                return Err(format!(
                    "pattern can match more than {MAX_ENTITY_LEN} bytes: bound its repetitions (e.g. `{{1,64}}` instead of `+`)"
                ))
            }
        }
        if hir.properties().minimum_len() == Some(0) {
            return Err("pattern can match the empty string".into());
        }
        let re = RegexBuilder::new(pattern)
            .size_limit(1 << 22)
            .build()
            .map_err(|e| format!("invalid pattern: {e}"))?;
        Ok(Entity {
            name: intern(name),
            re,
            validator,
        })
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

    #[test]
    fn patterns_are_bounded_and_validated() {
        assert!(Entity::new("e", "EMP-[0-9]{6}", "none").is_ok());
        let e = Entity::new("e", "EMP-[0-9]+", "none").unwrap_err();
        assert!(e.contains("more than 1024 bytes"), "{e}");
        assert!(Entity::new("e", "x?", "none")
            .unwrap_err()
            .contains("empty"));
        assert!(Entity::new("e", "(", "none")
            .unwrap_err()
            .starts_with("invalid pattern"));
        assert!(Entity::new("e", "a", "crc")
            .unwrap_err()
            .contains("unknown validator"));
        let card = Entity::new("acct", r"ACCT[0-9]{8}", "luhn").unwrap();
        let mut out = Vec::new();
        // 79927398713 style: 12345674 passes Luhn, 12345678 does not.
        card.find(b"ACCT12345674 ACCT12345678", &mut out);
        assert_eq!(out, vec![0..12]);
        assert_eq!(intern("acct").as_ptr(), card.name.as_ptr(), "interned once");
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
        for cut in 0..=text.len() {
            let mut s = crate::StreamMasker::new(profile.clone());
            let mut out = Vec::new();
            s.feed(&text[..cut], &mut out);
            s.feed(&text[cut..], &mut out);
            s.finish(&mut out);
            assert_eq!(out, whole, "split at {cut}");
        }
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
