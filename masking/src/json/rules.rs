//! Field rules: `$`-rooted paths and bare key names, each with a mask style,
//! and how a scanned value's path is matched against them.

use super::scanner::PathSeg;
use super::unescape::key_text;
use crate::mask::Style;
use crate::Error;

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
    pub fn new(rules: &[(&str, &str)]) -> Result<FieldRules, Error> {
        FieldRules::with_key(rules, None)
    }

    /// As [`FieldRules::new`], with the key of the `hash` style.
    pub fn with_key(
        rules: &[(&str, &str)],
        hash_key: Option<crate::HashKey>,
    ) -> Result<FieldRules, Error> {
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
    pub(super) fn own_style(&self, path: &[PathSeg], doc: &[u8]) -> Option<Style> {
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

/// `$.a.b[*].c`, `$.a[0]`, `$.*`, `$['a b']`.
fn parse_path(path: &str) -> Result<Vec<Seg>, Error> {
    let bad = || Error::InvalidFieldPath(path.to_owned());
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
