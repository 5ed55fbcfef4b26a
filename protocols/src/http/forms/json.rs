//! A JSON body's top-level keys, scanned as it streams ([`JsonScan`]).

use super::overrides_name;

const JSON_OVERRIDE: &str = "`_method` as a top-level key of a JSON body is not accepted (Laravel runs it as the method; guardrails judge the request's own method)";

/// A JSON body's top-level keys, as it streams, in bounded memory: nesting
/// is counted, strings are skipped, and only the first bytes of a key in the
/// top-level object are kept (decoded: `"\u005fmethod"` is `_method`).
#[derive(Default)]
pub struct JsonScan {
    depth: u32,
    /// The top-level value is an object.
    object: bool,
    in_string: bool,
    /// The string being read is a top-level key.
    in_key: bool,
    /// A top-level key may start next (after `{` or `,`).
    key_next: bool,
    /// After a backslash: the escape read so far (`\`, `\u00`).
    escape: Vec<u8>,
    /// The key's first bytes, decoded.
    key: Vec<u8>,
}

impl JsonScan {
    /// Bytes of a key that decide it (`_method` and one more).
    const KEEP: usize = 8;

    pub fn feed(&mut self, data: &[u8]) -> Result<(), &'static str> {
        for &b in data {
            if self.in_string {
                if !self.escape.is_empty() {
                    self.escape.push(b);
                    let done = match self.escape[1] {
                        b'u' => self.escape.len() == 6,
                        _ => true,
                    };
                    if done {
                        let escape = std::mem::take(&mut self.escape);
                        if self.in_key {
                            self.push_escape(&escape);
                        }
                    }
                    continue;
                }
                match b {
                    b'\\' => self.escape.push(b),
                    b'"' => {
                        self.in_string = false;
                        if std::mem::take(&mut self.in_key) && overrides_name(&self.key) {
                            return Err(JSON_OVERRIDE);
                        }
                    }
                    _ if self.in_key && self.key.len() < Self::KEEP => self.key.push(b),
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.in_key = self.key_next && self.depth == 1 && self.object;
                    self.key_next = false;
                    self.key.clear();
                }
                b'{' | b'[' => {
                    if self.depth == 0 {
                        self.object = b == b'{';
                    }
                    self.depth = self.depth.saturating_add(1);
                    self.key_next = b == b'{' && self.depth == 1;
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b',' if self.depth == 1 => self.key_next = self.object,
                _ => {}
            }
        }
        Ok(())
    }

    fn push_escape(&mut self, escape: &[u8]) {
        let c = match escape[1] {
            b'u' => std::str::from_utf8(&escape[2..])
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
                .unwrap_or('\u{fffd}'),
            b'n' => '\n',
            b't' => '\t',
            b'r' => '\r',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            other => other as char,
        };
        let mut utf8 = [0u8; 4];
        for &b in c.encode_utf8(&mut utf8).as_bytes() {
            if self.key.len() < Self::KEEP {
                self.key.push(b);
            }
        }
    }
}
