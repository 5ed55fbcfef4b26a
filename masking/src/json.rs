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

use crate::mask::{self, Style};
use crate::Masker;

/// One segment of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    AnyKey,
    Index(usize),
    AnyIndex,
}

/// Field rules: `$`-rooted paths (`$.a.b`, `$.a[*].b`, `$.a[0]`, `$.*`), or
/// bare names that match that key at any depth (the profile's column rules).
#[derive(Debug, Clone, Default)]
pub struct FieldRules {
    paths: Vec<(Vec<Seg>, Style)>,
    names: Vec<(String, Style)>,
}

impl FieldRules {
    /// Parses `(path or name, style)` pairs; `Err` names a bad path or style.
    pub fn new(rules: &[(&str, &str)]) -> Result<FieldRules, String> {
        FieldRules::with_key(rules, None)
    }

    /// As [`FieldRules::new`], with the key of the `hash` style.
    pub fn with_key(
        rules: &[(&str, &str)],
        hash_key: Option<crate::HashKey>,
    ) -> Result<FieldRules, String> {
        let mut out = FieldRules::default();
        for (path, style) in rules {
            let st = Style::parse(style, hash_key)?;
            if path.starts_with('$') {
                out.paths.push((parse_path(path)?, st));
            } else {
                out.names.push((path.to_ascii_lowercase(), st));
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.names.is_empty()
    }

    /// The rule for the value at `path` itself, if any. (Values inside an
    /// object or array a rule names inherit its style: the scanner carries it.)
    fn own_style(&self, path: &[PathSeg], doc: &[u8]) -> Option<Style> {
        if let Some(PathSeg::Key(k)) = path.last() {
            let key = key_text(&doc[k.clone()]);
            if let Some((_, st)) = self
                .names
                .iter()
                .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(&key))
            {
                return Some(*st);
            }
        }
        self.paths
            .iter()
            .find(|(p, _)| {
                p.len() == path.len()
                    && p.iter().zip(path).all(|(want, got)| match (want, got) {
                        (Seg::AnyKey, PathSeg::Key(_)) | (Seg::AnyIndex, PathSeg::Index(_)) => true,
                        (Seg::Key(w), PathSeg::Key(r)) => {
                            w.as_bytes() == &*key_text(&doc[r.clone()])
                        }
                        (Seg::Index(w), PathSeg::Index(i)) => w == i,
                        _ => false,
                    })
            })
            .map(|(_, st)| *st)
    }
}

/// A key or string as the document means it: `"s\u0073n"` is the key `ssn`,
/// so an escape cannot step around a rule or hide a value from the detectors
/// (a lone surrogate reads as U+FFFD, as JSON clients read it). Borrowed when
/// there is no escape.
fn key_text(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if memchr::memchr(b'\\', raw).is_none() {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    let hex = |at: usize| {
        raw.get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 >= raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let (c, used) = match raw[i + 1] {
            b'u' => match hex(i + 2) {
                // A surrogate pair spells one character.
                Some(hi @ 0xD800..=0xDBFF) if raw.get(i + 6..i + 8) == Some(b"\\u") => {
                    match hex(i + 8) {
                        Some(lo @ 0xDC00..=0xDFFF) => (
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)),
                            12,
                        ),
                        _ => (None, 6),
                    }
                }
                Some(v) => (char::from_u32(v), 6),
                None => (None, 2),
            },
            b'n' => (Some('\n'), 2),
            b't' => (Some('\t'), 2),
            b'r' => (Some('\r'), 2),
            b'b' => (Some('\u{8}'), 2),
            b'f' => (Some('\u{c}'), 2),
            other => (Some(other as char), 2),
        };
        let mut utf8 = [0u8; 4];
        out.extend_from_slice(c.unwrap_or('\u{fffd}').encode_utf8(&mut utf8).as_bytes());
        i += used;
    }
    std::borrow::Cow::Owned(out)
}

/// `$.a.b[*].c`, `$.a[0]`, `$.*`, `$['a b']`.
fn parse_path(path: &str) -> Result<Vec<Seg>, String> {
    let bad = || format!("invalid field path `{path}`: expected e.g. $.users[*].ssn");
    let mut rest = path.strip_prefix('$').ok_or_else(bad)?;
    let mut segs = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = &r[..end];
            if name.is_empty() {
                return Err(bad());
            }
            segs.push(if name == "*" {
                Seg::AnyKey
            } else {
                Seg::Key(name.to_owned())
            });
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']").ok_or_else(bad)?;
            segs.push(Seg::Key(r[..end].to_owned()));
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(bad)?;
            let inner = &r[..end];
            segs.push(if inner == "*" {
                Seg::AnyIndex
            } else {
                Seg::Index(inner.parse().map_err(|_| bad())?)
            });
            rest = &r[end + 1..];
        } else {
            return Err(bad());
        }
    }
    if segs.is_empty() {
        return Err(bad());
    }
    Ok(segs)
}

/// A path segment of the value being scanned: a key's byte range (without
/// quotes; escapes in keys are compared raw) or an array index.
#[derive(Debug, Clone)]
enum PathSeg {
    Key(std::ops::Range<usize>),
    Index(usize),
}

/// Why a body was not masked as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson(pub usize);

impl std::fmt::Display for NotJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not valid JSON at byte {}", self.0)
    }
}

/// Most nesting accepted (a deeper document is refused, not recursed into).
const MAX_DEPTH: usize = 512;

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Frame {
    Object,
    /// In an array, at this index.
    Array(usize),
}

/// Calls `visit(range, is_string, path)` for every scalar value of the
/// document, validating the grammar.
#[cfg(test)]
fn scan(
    doc: &[u8],
    mut visit: impl FnMut(std::ops::Range<usize>, bool, &[PathSeg]),
) -> Result<(), NotJson> {
    scan_with(
        &mut doc.to_vec(),
        |_, _| None,
        |_, r, s, p, _| visit(r, s, p),
    )
}

/// [`scan`], also passing each scalar the style of `rule` for its own path or,
/// failing that, the one its nearest enclosing container got (looked up once
/// per container, so deep documents cost no more per value). `visit` may
/// rewrite the bytes of the value it is given (the same number of them), not
/// the structure around it.
#[cfg(test)]
fn scan_with(
    doc: &mut [u8],
    rule: impl Fn(&[PathSeg], &[u8]) -> Option<Style>,
    mut visit: impl FnMut(&mut [u8], std::ops::Range<usize>, bool, &[PathSeg], Option<Style>),
) -> Result<(), NotJson> {
    scan_keys_with(doc, rule, |doc, r, scalar, path, style| {
        if scalar != Scalar::Key {
            visit(doc, r, scalar == Scalar::String, path, style)
        }
    })
}

/// What [`scan_keys_with`] hands its visitor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scalar {
    /// A key's bytes inside the quotes, as it is read (before the rules
    /// look at it); the path does not hold it yet.
    Key,
    /// A string value, with its quotes.
    String,
    /// A number, `true`, `false` or `null`.
    Other,
}

/// [`scan_with`], also visiting each key.
fn scan_keys_with(
    doc: &mut [u8],
    rule: impl Fn(&[PathSeg], &[u8]) -> Option<Style>,
    mut visit: impl FnMut(&mut [u8], std::ops::Range<usize>, Scalar, &[PathSeg], Option<Style>),
) -> Result<(), NotJson> {
    let mut stack: Vec<Frame> = Vec::new();
    // The inherited style of each open container.
    let mut styles: Vec<Option<Style>> = Vec::new();
    let inherited = |styles: &Vec<Option<Style>>| styles.last().copied().flatten();
    let mut path: Vec<PathSeg> = Vec::new();
    let mut i = skip_ws(doc, 0);
    // Expecting a value (true) or, inside a container, a separator/end (false).
    let mut want_value = true;
    loop {
        if want_value {
            let Some(&b) = doc.get(i) else {
                return Err(NotJson(i));
            };
            match b {
                b'{' => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(NotJson(i));
                    }
                    stack.push(Frame::Object);
                    styles.push(rule(&path, doc).or(inherited(&styles)));
                    i = skip_ws(doc, i + 1);
                    if doc.get(i) == Some(&b'}') {
                        stack.pop();
                        styles.pop();
                        i += 1;
                        want_value = false;
                    } else {
                        i = read_key(doc, i, &mut path, &mut visit)?;
                    }
                    continue;
                }
                b'[' => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(NotJson(i));
                    }
                    stack.push(Frame::Array(0));
                    styles.push(rule(&path, doc).or(inherited(&styles)));
                    i = skip_ws(doc, i + 1);
                    if doc.get(i) == Some(&b']') {
                        stack.pop();
                        styles.pop();
                        i += 1;
                        want_value = false;
                    } else {
                        path.push(PathSeg::Index(0));
                    }
                    continue;
                }
                b'"' => {
                    let end = string_end(doc, i)?;
                    let style = rule(&path, doc).or(inherited(&styles));
                    visit(doc, i..end, Scalar::String, &path, style);
                    i = end;
                }
                _ => {
                    let end = literal_end(doc, i)?;
                    let style = rule(&path, doc).or(inherited(&styles));
                    visit(doc, i..end, Scalar::Other, &path, style);
                    i = end;
                }
            }
            want_value = false;
            continue;
        }
        // After a value: close containers or move to the next member.
        i = skip_ws(doc, i);
        let Some(frame) = stack.last_mut() else {
            return if i == doc.len() {
                Ok(())
            } else {
                Err(NotJson(i))
            };
        };
        match (doc.get(i), frame) {
            (Some(b','), Frame::Object) => {
                path.pop();
                i = read_key(doc, skip_ws(doc, i + 1), &mut path, &mut visit)?;
                want_value = true;
            }
            (Some(b','), Frame::Array(n)) => {
                *n += 1;
                let n = *n;
                path.pop();
                path.push(PathSeg::Index(n));
                i = skip_ws(doc, i + 1);
                want_value = true;
            }
            (Some(b'}'), Frame::Object) | (Some(b']'), Frame::Array(_)) => {
                stack.pop();
                styles.pop();
                path.pop();
                i += 1;
            }
            _ => return Err(NotJson(i)),
        }
    }
}

/// [`key`], handing the key's bytes to `visit` first.
fn read_key<V>(
    doc: &mut [u8],
    i: usize,
    path: &mut Vec<PathSeg>,
    visit: &mut V,
) -> Result<usize, NotJson>
where
    V: FnMut(&mut [u8], std::ops::Range<usize>, Scalar, &[PathSeg], Option<Style>),
{
    if doc.get(i) == Some(&b'"') {
        let end = string_end(doc, i)?;
        visit(doc, i + 1..end - 1, Scalar::Key, path, None);
    }
    key(doc, i, path)
}

/// Reads `"key" :` at `i`, pushes the key, returns the position of the value.
fn key(doc: &[u8], i: usize, path: &mut Vec<PathSeg>) -> Result<usize, NotJson> {
    if doc.get(i) != Some(&b'"') {
        return Err(NotJson(i));
    }
    let end = string_end(doc, i)?;
    path.push(PathSeg::Key(i + 1..end - 1));
    let j = skip_ws(doc, end);
    if doc.get(j) != Some(&b':') {
        return Err(NotJson(j));
    }
    Ok(skip_ws(doc, j + 1))
}

fn skip_ws(doc: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = doc.get(i) {
        i += 1;
    }
    i
}

/// The end (after the closing quote) of the string starting at `doc[i] == '"'`.
fn string_end(doc: &[u8], i: usize) -> Result<usize, NotJson> {
    let mut j = i + 1;
    loop {
        let k = j + memchr::memchr2(b'"', b'\\', &doc[j..]).ok_or(NotJson(doc.len()))?;
        if doc[j..k].iter().any(|&b| b < 0x20) {
            return Err(NotJson(j));
        }
        match doc[k] {
            b'"' => return Ok(k + 1),
            b'\\' => match doc.get(k + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j = k + 2,
                Some(b'u')
                    if doc
                        .get(k + 2..k + 6)
                        .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                {
                    j = k + 6
                }
                _ => return Err(NotJson(k)),
            },
            _ => unreachable!("memchr2 finds only these"),
        }
    }
}

/// The end of a number, `true`, `false` or `null` at `i`.
fn literal_end(doc: &[u8], i: usize) -> Result<usize, NotJson> {
    for word in [&b"true"[..], b"false", b"null"] {
        if doc[i..].starts_with(word) {
            return Ok(i + word.len());
        }
    }
    // -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?
    let mut j = i;
    let digits = |j: &mut usize| {
        let s = *j;
        while doc.get(*j).is_some_and(u8::is_ascii_digit) {
            *j += 1;
        }
        *j > s
    };
    if doc.get(j) == Some(&b'-') {
        j += 1;
    }
    if doc.get(j) == Some(&b'0') {
        j += 1;
    } else if !digits(&mut j) {
        return Err(NotJson(i));
    }
    if doc.get(j) == Some(&b'.') {
        j += 1;
        if !digits(&mut j) {
            return Err(NotJson(j));
        }
    }
    if let Some(b'e' | b'E') = doc.get(j) {
        j += 1;
        if let Some(b'+' | b'-') = doc.get(j) {
            j += 1;
        }
        if !digits(&mut j) {
            return Err(NotJson(j));
        }
    }
    Ok(j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Profile;

    fn run(doc: &str, rules: &[(&str, &str)]) -> Result<String, NotJson> {
        let mut m = Masker::new(Profile::new(&["email", "credit_card", "ssn"], &[]).unwrap());
        let rules = FieldRules::new(rules).unwrap();
        let mut v = doc.as_bytes().to_vec();
        mask_json(&mut v, &mut m, &rules)?;
        Ok(String::from_utf8(v).unwrap())
    }

    #[test]
    fn keys_holding_values_are_masked_like_values() {
        let out = run(
            r#"{"users":{"jane@example.com":{"plan":"pro"},"4111\u00201111 1111 1111":1}}"#,
            &[("plan", "full")],
        )
        .unwrap();
        assert!(!out.contains("jane@") && !out.contains("4111"), "{out}");
        assert!(out.contains(r#""plan":"***""#), "{out}");
        assert_eq!(
            run(r#"{"ssn":1}"#, &[("ssn", "full")]).unwrap(),
            r#"{"ssn":"*"}"#
        );
        // Rules match keys as they were, also where a detector masks the
        // key itself (a bare-name rule naming it, here).
        let out = run(
            r#"{"jane@example.com":{"plan":"pro"},"n":7}"#,
            &[("jane@example.com", "full"), ("n", "full")],
        )
        .unwrap();
        assert!(out.contains(r#":{"plan":"***"}"#), "{out}");
        assert!(!out.contains("jane"), "{out}");
        assert!(out.contains(r#""n":"*""#), "{out}");
        // A key after a value that grew (a number masked into a string).
        let out = run(r#"{"n":7,"jane@example.com":1}"#, &[("n", "full")]).unwrap();
        assert_eq!(out, r#"{"n":"*","j***@*******.com":1}"#);
    }

    #[test]
    fn escaped_runs_in_text_that_is_not_json_are_read_decoded() {
        let mut m = Masker::new(Profile::new(&["email", "credit_card"], &[]).unwrap());
        for (text, clear) in [
            (r#"{"a":"jane\u0040example.com","n":NaN}"#, "jane"),
            // Quoting tricks do not shift what is read: runs both sides of
            // every unescaped quote are checked.
            (r#"{"a":"x\"", b: 4111\u002D1111-1111-1111 // "#, "4111"),
            (r#"'jane\u0040example.com'"#, "jane"),
        ] {
            let mut v = text.as_bytes().to_vec();
            assert!(mask_escaped_runs(&mut v, &mut m) > 0, "{text}");
            let out = String::from_utf8(v).unwrap();
            assert!(!out.contains(clear), "{out}");
            assert_eq!(out.len(), text.len());
        }
        let mut plain = br#"{"a":"caf\u00e9","b":"\"quoted\""}"#.to_vec();
        let before = plain.clone();
        assert_eq!(mask_escaped_runs(&mut plain, &mut m), 0);
        assert_eq!(plain, before);
    }

    #[test]
    fn field_paths_and_detectors() {
        let doc = r#"{"users":[{"name":"Jane","ssn":"123-45-6789","contact":{"email":"jane@example.com"}},
                      {"name":"Bob","ssn":"987-65-4321","card":4111111111111111,"note":"pay 5500 0000 0000 0004"}],
                      "total": 2}"#;
        let out = run(
            doc,
            &[
                ("$.users[*].ssn", "full"),
                ("card", "last4"),
                ("$.total", "full"),
            ],
        )
        .unwrap();
        let v: serde_json_check::Value = serde_json_check::from_str(&out);
        assert_eq!(v.get("users.0.ssn"), "\"***********\"");
        assert_eq!(v.get("users.1.ssn"), "\"***********\"");
        assert_eq!(v.get("users.0.contact.email"), "\"j***@*******.com\"");
        assert_eq!(
            v.get("users.1.card"),
            "\"************1111\"",
            "a number becomes a masked string"
        );
        assert_eq!(v.get("users.1.note"), "\"pay **** **** **** 0004\"");
        assert_eq!(v.get("users.0.name"), "\"Jane\"");
        assert_eq!(v.get("total"), "\"*\"");
    }

    #[test]
    fn a_rule_on_an_object_or_array_covers_everything_inside() {
        let doc = r#"{"customer":{"name":"Jane Roe","address":{"street":"1 Main St","zip":12345},"tags":["vip","eu"]},"id":7}"#;
        let out = run(doc, &[("$.customer.address", "full"), ("tags", "full")]).unwrap();
        assert_eq!(
            out,
            r#"{"customer":{"name":"Jane Roe","address":{"street":"*********","zip":"*****"},"tags":["***","**"]},"id":7}"#
        );
        // The most specific rule wins inside a covered object.
        let out = run(
            r#"{"card":{"number":"4111111111111111","brand":"visa"}}"#,
            &[("card", "full"), ("$.card.number", "last4")],
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"card":{"number":"************1111","brand":"****"}}"#
        );
    }

    #[test]
    fn escaped_keys_cannot_step_around_a_rule() {
        let out = run(
            r#"{"s\u0073n":"x","a":{"n\u0061me":"Jane"}}"#,
            &[("ssn", "full"), ("$.a.name", "full")],
        )
        .unwrap();
        assert_eq!(out, r#"{"s\u0073n":"*","a":{"n\u0061me":"****"}}"#);
        // A surrogate pair spells one character.
        assert_eq!(&*key_text(br"\ud83d\ude00"), "\u{1F600}".as_bytes());
        assert_eq!(&*key_text(br"a\nb\\c\/"), b"a\nb\\c/");
    }

    #[test]
    fn values_that_grow_and_values_masked_in_place_interleave() {
        let doc = r#"[4111111111111111,"jane@example.com",{"n":5500000000000004,"m":"bob@example.org"},7,true]"#;
        let out = run(doc, &[("$[4]", "full")]).unwrap();
        assert_eq!(
            out,
            r#"["************1111","j***@*******.com",{"n":"************0004","m":"b**@*******.org"},7,"****"]"#
        );
        // Many small values: each handled as it is reached.
        let many = format!("[{}\"x@example.com\"]", "1,".repeat(100_000));
        let out = run(&many, &[]).unwrap();
        assert!(
            out.ends_with(r#"1,"x@*******.com"]"#),
            "{}",
            &out[out.len() - 40..]
        );
    }

    #[test]
    fn numbers_are_checked_by_the_detectors_too() {
        let out = run(r#"{"card":4111111111111111,"n":42}"#, &[]).unwrap();
        assert_eq!(out, r#"{"card":"************1111","n":42}"#);
    }

    #[test]
    fn escapes_are_never_broken() {
        let out = run(r#"{"a":"mail \"jane@example.com\" now","b":"x\\"}"#, &[]).unwrap();
        assert_eq!(out, r#"{"a":"*****************************","b":"x\\"}"#);
        let out = run(r#"{"ssn":"12\u0033-45-6789"}"#, &[("ssn", "last4")]).unwrap();
        assert_eq!(out, r#"{"ssn":"****************"}"#);
    }

    #[test]
    fn escaped_values_are_read_as_json_clients_read_them() {
        let doc = r#"{"note":"jane.doe\u0040example.com","phone":"\u002B1 415 555 2671","tax":"123\u002D45-6789","pan":"4111\u002D1111-1111-1111","ok":"caf\u00e9 \ud83d\ude00"}"#;
        let mut m =
            Masker::new(Profile::new(&["email", "credit_card", "ssn", "phone"], &[]).unwrap());
        let mut bytes = doc.as_bytes().to_vec();
        mask_json(&mut bytes, &mut m, &FieldRules::default()).unwrap();
        let out = String::from_utf8(bytes).unwrap();
        let v = serde_json_check::from_str(&out);
        for field in ["note", "phone", "tax", "pan"] {
            let got = v.get(field);
            assert!(
                got.trim_matches('"').chars().all(|c| c == '*'),
                "{field}: {got}"
            );
        }
        // Nothing to mask: the escapes pass exactly as they came.
        assert!(out.contains(r#""ok":"caf\u00e9 \ud83d\ude00""#), "{out}");
        // Split across the escape of a surrogate pair, an email still shows.
        let out = run(
            r#"{"a":"x\ud83d\ude00@example.com y\u0040example.org"}"#,
            &[],
        )
        .unwrap();
        assert!(!out.contains("example"), "{out}");
    }

    #[test]
    fn invalid_documents_are_refused() {
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "{\"a\" 1}",
            "[1,]",
            "[01]",
            "{\"a\":1,}",
            "\"\\x\"",
            "tru",
            "{\"a\":\"\n\"}",
            "[1] x",
            "{'a':1}",
            "[1.]",
            "[-]",
            "[1e]",
        ] {
            assert!(run(bad, &[]).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(600) + &"]".repeat(600);
        assert!(run(&deep, &[]).is_err());
        for good in [
            "[]",
            "{}",
            "0",
            "-1.5e+3",
            "\"s\"",
            "[true,false,null]",
            " { \"a\" : [ 1 , { } ] } ",
        ] {
            assert_eq!(run(good, &[]).unwrap(), good, "{good:?}");
        }
    }

    #[test]
    fn paths_parse_or_fail_clearly() {
        assert!(FieldRules::new(&[
            ("$.a[*].b", "redact"),
            ("$['x y'][0]", "full"),
            ("$.*", "full")
        ])
        .is_ok());
        for bad in ["$", "$.", "$[x]", "$.a[", "$..a"] {
            assert!(FieldRules::new(&[(bad, "full")]).is_err(), "{bad}");
        }
    }

    /// A tiny JSON path reader for assertions (the crate has no JSON parser
    /// dependency): returns the raw text of the value at `a.b.0.c`.
    mod serde_json_check {
        pub struct Value(String);
        pub fn from_str(s: &str) -> Value {
            Value(s.to_owned())
        }
        impl Value {
            pub fn get(&self, path: &str) -> String {
                let doc = self.0.as_bytes();
                let mut scalars = Vec::new();
                super::scan(doc, |r, _, p| scalars.push((r, p.to_vec()))).expect("valid JSON");
                let want: Vec<&str> = path.split('.').collect();
                for (range, spath) in scalars {
                    let p: Vec<String> = spath
                        .iter()
                        .map(|seg| match seg {
                            super::PathSeg::Key(r) => {
                                String::from_utf8_lossy(&doc[r.clone()]).into_owned()
                            }
                            super::PathSeg::Index(i) => i.to_string(),
                        })
                        .collect();
                    if p == want {
                        return String::from_utf8_lossy(&doc[range]).into_owned();
                    }
                }
                panic!("no value at {path} in {}", self.0)
            }
        }
    }
}
