//! Masking JSON documents: by field path (`$.users[*].ssn`) and with every
//! detector on every string value.
//!
//! The scanner walks the document once, borrowing it (no tree is built), and
//! knows the byte range and the path of every scalar. Keys are read by the
//! detectors too (`{"jane@example.com": ...}`), before the rules look at
//! them. A string is masked in place when it can be (no escapes inside, so
//! masking cannot break one); a
//! string with escapes that needs masking is replaced by `*`s whole, and a
//! number, boolean or null under a field rule becomes a masked string. Both of
//! those change the length, so the caller re-frames the body. A document that
//! is not valid JSON is an error: the caller falls back to masking it as text,
//! never passes it through.

mod rules;
mod scanner;
mod unescape;

pub use rules::FieldRules;
#[cfg(test)]
use scanner::scan;
pub use scanner::NotJson;
use scanner::{scan_keys_with, PathSeg, Scalar};
use unescape::key_text;

use crate::mask;
use crate::Masker;

/// Masks `doc` in place where possible; values that change length are rebuilt
/// into a new buffer. Returns the number of values masked.
///
/// Each value is masked as the scanner reaches it, so memory does not grow
/// with the number of values (a hostile document of millions of tiny values
/// costs no more than its own bytes). If the document turns out not to be
/// JSON, what was masked so far stays masked and `Err` says where it broke.
pub fn mask_json(
    doc: &mut Vec<u8>,
    masker: &mut Masker,
    rules: &FieldRules,
) -> Result<u64, NotJson> {
    let mut masked = 0u64;
    // Values that become longer (numbers, booleans, null turned into masked
    // strings) are spliced into `out` as they come: `doc[copied..]` is what
    // remains to copy.
    let mut out: Vec<u8> = Vec::new();
    let mut copied = 0usize;
    // A value takes its own rule or else the nearest enclosing object's or
    // array's (a rule on `$.customer.address` covers everything inside it).
    let own = |path: &[PathSeg], doc: &[u8]| {
        if rules.is_empty() {
            None
        } else {
            rules.own_style(path, doc)
        }
    };
    // Keys to mask, with what replaces them, applied once the scan is done:
    // the rules match keys as they were (`{"jane@example.com": ...}` under a
    // rule on its object is still that key to the rules).
    let mut keys: Vec<(std::ops::Range<usize>, Vec<u8>)> = Vec::new();
    let mut scratch = Vec::new();
    // Where values grew (spliced into `out`): `(doc position, growth so far)`.
    let mut shifts: Vec<(usize, usize)> = Vec::new();
    scan_keys_with(doc, own, |doc, r, scalar, _, style| {
        // A key can hold a value too: read by the detectors like a string
        // value (whole, if it has escapes). Rules cover values, not the keys
        // that name them (`$.address` keeps `street`).
        if scalar == Scalar::Key {
            let raw = &doc[r.clone()];
            scratch.clear();
            scratch.extend_from_slice(&key_text(raw));
            let n = masker.mask_value(&mut scratch, None);
            if n > 0 {
                masked += n;
                let replacement =
                    if memchr::memchr(b'\\', raw).is_some() || scratch.len() != raw.len() {
                        vec![b'*'; raw.len()]
                    } else {
                        scratch.clone()
                    };
                keys.push((r, replacement));
            }
            return;
        }
        let string = scalar == Scalar::String;
        if string {
            let inner = r.start + 1..r.end - 1;
            let escaped = memchr::memchr(b'\\', &doc[inner.clone()]).is_some();
            if !escaped {
                masked += masker.mask_value(&mut doc[inner], style);
                return;
            }
            // Escapes inside: the detectors read the string as any JSON
            // client will (`jane.doe\u0040example.com` is an email); if
            // anything is found the whole string becomes `*`s, the same
            // length (masking around an escape could break it). A string with
            // nothing to mask passes byte for byte as it came.
            let mut copy = key_text(&doc[inner.clone()]).into_owned();
            let n = masker.mask_value(&mut copy, style);
            if n > 0 {
                masked += n;
                doc[inner].fill(b'*');
            }
            return;
        }
        // A number, boolean or null: under a field rule, or if a detector
        // finds something in it (a card number sent as a number), it becomes
        // a masked string.
        let mut v = doc[r.clone()].to_vec();
        let len = v.len();
        match style {
            Some(st) => {
                mask::apply(&mut v, 0..len, None, st);
                masker.counts.by_column_rule += 1;
                masked += 1;
            }
            None => {
                let n = masker.mask_value(&mut v, None);
                if n == 0 {
                    return;
                }
                masked += n;
            }
        }
        if out.is_empty() {
            out.reserve(doc.len() + 64);
        }
        out.extend_from_slice(&doc[copied..r.start]);
        out.push(b'"');
        out.extend_from_slice(&v);
        out.push(b'"');
        copied = r.end;
        let grown = shifts.last().map_or(0, |s| s.1) + v.len() + 2 - r.len();
        shifts.push((r.end, grown));
    })?;
    if copied > 0 {
        out.extend_from_slice(&doc[copied..]);
        *doc = out;
    }
    let mut shift = shifts.iter().peekable();
    let mut grown = 0;
    for (k, replacement) in keys {
        while let Some(&&(at, g)) = shift.peek() {
            if at > k.start {
                break;
            }
            grown = g;
            shift.next();
        }
        doc[k.start + grown..k.end + grown].copy_from_slice(&replacement);
    }
    Ok(masked)
}

/// For text that did not parse as JSON but may still be read by a lenient
/// JSON client (Python's `json` takes `NaN`, some take comments or trailing
/// commas): every run between unescaped double quotes that holds a backslash
/// escape is read decoded, and if a detector finds anything in it the run
/// becomes `*`s (same length). Runs inside and outside strings are treated
/// alike, so no quoting trick can misalign the scan. Returns values masked.
pub fn mask_escaped_runs(text: &mut [u8], masker: &mut Masker) -> u64 {
    let mut masked = 0;
    let mut start = 0;
    let mut i = 0;
    loop {
        let found = text.get(i..).and_then(|t| memchr::memchr2(b'"', b'\\', t));
        let Some(k) = found.map(|k| i + k) else {
            masked += mask_run(&mut text[start..], masker);
            break;
        };
        if text[k] == b'\\' {
            // An escape: the next byte is part of the run, whatever it is.
            i = k + 2;
            continue;
        }
        masked += mask_run(&mut text[start..k], masker);
        start = k + 1;
        i = k + 1;
    }
    masked
}

fn mask_run(run: &mut [u8], masker: &mut Masker) -> u64 {
    if memchr::memchr(b'\\', run).is_none() {
        return 0;
    }
    let mut decoded = key_text(run).into_owned();
    let n = masker.mask_value(&mut decoded, None);
    if n > 0 {
        run.fill(b'*');
    }
    n
}

#[cfg(test)]
mod tests;
