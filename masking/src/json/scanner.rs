//! The scanner: one pass over a document, borrowing it (no tree is built),
//! validating the grammar and handing each key and scalar, with its byte
//! range, path and inherited rule, to a visitor.

use crate::mask::Style;

/// A path segment of the value being scanned: a key's byte range (without
/// quotes; escapes in keys are compared raw) or an array index.
#[derive(Debug, Clone)]
pub(super) enum PathSeg {
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Frame {
    Object,
    /// In an array, at this index.
    Array(usize),
}

/// Calls `visit(range, is_string, path)` for every scalar value of the
/// document, validating the grammar.
#[cfg(test)]
pub(super) fn scan(
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
pub(super) fn scan_with(
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
pub(super) enum Scalar {
    /// A key's bytes inside the quotes, as it is read (before the rules
    /// look at it); the path does not hold it yet.
    Key,
    /// A string value, with its quotes.
    String,
    /// A number, `true`, `false` or `null`.
    Other,
}

/// [`scan_with`], also visiting each key.
pub(super) fn scan_keys_with(
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
