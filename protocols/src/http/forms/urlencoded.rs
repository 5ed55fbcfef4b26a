//! An urlencoded body's field names, scanned as it streams ([`UrlencodedScan`]).

use super::{overrides_name, FORM_OVERRIDE};

/// An urlencoded body, field name by field name, in bounded memory: only the
/// first bytes after a name's leading spaces can make it `_method`.
#[derive(Default)]
pub struct UrlencodedScan {
    /// The current name's first bytes (decoded, leading spaces dropped).
    name: Vec<u8>,
    /// Inside a value (after `=`): skipped up to `&` or `;`.
    in_value: bool,
    /// A `%` and the hex digits after it so far.
    escape: Vec<u8>,
    /// The name began with `[` (PHP reads a lone `[` as `_`).
    bracket: bool,
}

impl UrlencodedScan {
    /// Bytes of a name that decide it (`_method` and one more).
    const KEEP: usize = 8;

    pub fn feed(&mut self, data: &[u8]) -> Result<(), &'static str> {
        for &b in data {
            match b {
                b'&' | b';' => {
                    self.end_name()?;
                    continue;
                }
                _ if self.in_value => continue,
                b'=' => {
                    self.end_name()?;
                    self.in_value = true;
                    continue;
                }
                _ => {}
            }
            let decoded = if !self.escape.is_empty() || b == b'%' {
                self.escape.push(b);
                if self.escape.len() < 3 {
                    continue;
                }
                let hex = std::str::from_utf8(&self.escape[1..]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        self.escape.clear();
                        v
                    }
                    // Not an escape: the bytes stand for themselves.
                    None => {
                        let raw = std::mem::take(&mut self.escape);
                        for r in raw {
                            self.push(r);
                        }
                        continue;
                    }
                }
            } else if b == b'+' {
                b' '
            } else {
                b
            };
            self.push(decoded);
        }
        Ok(())
    }

    fn push(&mut self, b: u8) {
        // The leading run of spaces and brackets is dropped (Rack, qs, PHP),
        // so it cannot push the name's deciding bytes out of what is kept.
        if self.name.is_empty() && matches!(b, b' ' | b'[' | b']') {
            self.bracket |= b == b'[';
            return;
        }
        if self.name.len() < Self::KEEP {
            self.name.push(b);
        }
    }

    /// A name ended (at `=`, `&`, `;` or the body's end).
    pub(super) fn end_name(&mut self) -> Result<(), &'static str> {
        let pending = std::mem::take(&mut self.escape);
        for r in pending {
            self.push(r);
        }
        let found = !self.in_value
            && (overrides_name(&self.name)
                || (self.bracket && overrides_name(&[&b"["[..], &self.name].concat())));
        self.name.clear();
        self.in_value = false;
        self.bracket = false;
        if found {
            return Err(FORM_OVERRIDE);
        }
        Ok(())
    }
}
