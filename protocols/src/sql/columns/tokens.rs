//! Reading tokens for the column check: words, names as the server cuts them,
//! bracket groups, depth-0 positions, comma lists, and refusing.

use crate::sql::lexer::TokenKind;

use super::{Check, Refusal, Result, ATTRIBUTE, UNREAD};

impl<'a> Check<'a> {
    /// Whether the name at `i` is `name` (lower-cased), as [`Check::ident`]
    /// reads it; a plain word is compared in place.
    pub(super) fn name_is(&self, i: usize, name: &[u8]) -> bool {
        let raw = &self.sql[self.t[i].range()];
        match self.t[i].kind {
            TokenKind::Word => {
                let mut cut = raw.len().min(63);
                while cut < raw.len() && cut > 0 && (raw[cut] & 0xC0) == 0x80 {
                    cut -= 1;
                }
                raw[..cut].eq_ignore_ascii_case(name)
            }
            _ => self.ident(i) == name,
        }
    }

    pub(super) fn refuse<T>(&self, name: &[u8], why: &'static str) -> Result<T> {
        Err(Refusal {
            name: String::from_utf8_lossy(name).into_owned(),
            why,
        })
    }

    pub(super) fn unread<T>(&self) -> Result<T> {
        self.refuse(b"", UNREAD)
    }

    pub(super) fn word(&self, i: usize) -> Option<&'a [u8]> {
        self.t
            .get(i)
            .filter(|t| t.kind == TokenKind::Word)
            .map(|t| &self.sql[t.range()])
    }

    pub(super) fn is(&self, i: usize, kw: &str) -> bool {
        self.word(i)
            .is_some_and(|w| w.eq_ignore_ascii_case(kw.as_bytes()))
    }

    pub(super) fn is_any(&self, i: usize, kws: &[&str]) -> bool {
        kws.iter().any(|k| self.is(i, k))
    }

    /// A clause keyword, not a label (`AS order`) or `WITHIN GROUP`.
    pub(super) fn clause_word(&self, i: usize, list: &[&str]) -> bool {
        self.is_any(i, list) && !(i > 0 && self.is_any(i - 1, &["as", "within"]))
    }

    pub(super) fn punct(&self, i: usize, c: u8) -> bool {
        self.t.get(i).is_some_and(|t| t.kind == TokenKind::Punct(c))
    }

    pub(super) fn name_like(&self, i: usize) -> bool {
        self.t
            .get(i)
            .is_some_and(|t| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent))
    }

    /// An identifier's name, lower-cased (`U&"..."` is refused at the start).
    pub(super) fn ident(&self, i: usize) -> Vec<u8> {
        let raw = &self.sql[self.t[i].range()];
        let mut name = match self.t[i].kind {
            TokenKind::QuotedIdent if raw.first() == Some(&b'"') => {
                let inner = &raw[1..raw.len() - 1];
                let mut out = Vec::with_capacity(inner.len());
                let mut k = 0;
                while k < inner.len() {
                    out.push(inner[k].to_ascii_lowercase());
                    k += if inner[k] == b'"' { 2 } else { 1 };
                }
                out
            }
            _ => raw.to_ascii_lowercase(),
        };
        // PostgreSQL cuts names to 63 bytes (at a character boundary).
        if name.len() > 63 {
            let mut cut = 63;
            while cut > 0 && (name[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            name.truncate(cut);
        }
        name
    }

    /// `q.x` with `q` standing for a protected relation: `x` must be one of
    /// its columns (otherwise PostgreSQL calls `x(q)` with the whole row).
    pub(super) fn attribute(&self, q: usize, x: usize) -> Result<()> {
        let Some(relation) = self.rels.get(&self.ident(q)) else {
            return Ok(());
        };
        let x = self.ident(x);
        let known = self
            .p
            .relation_columns
            .iter()
            .filter(|(r, _)| **r == **relation)
            .any(|(_, cols)| cols.iter().any(|c| **c == *x));
        let view = self
            .p
            .views
            .iter()
            .filter(|(v, _)| **v == **relation)
            .any(|(_, cols)| cols.iter().any(|c| **c == *x));
        if known || view {
            Ok(())
        } else {
            self.refuse(&self.ident(q), ATTRIBUTE)
        }
    }

    /// The index after the group opened at `i`.
    pub(super) fn skip_group(&self, i: usize, hi: usize) -> Result<usize> {
        match self.close.get(i) {
            Some(&c) if c < hi => Ok(c + 1),
            _ => self.unread(),
        }
    }

    /// Depth-0 positions in `lo..hi` where `pred` holds.
    pub(super) fn at_depth0(
        &self,
        lo: usize,
        hi: usize,
        pred: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        let mut i = lo;
        while i < hi {
            if self.punct(i, b'(') || self.punct(i, b'[') {
                i = self.close[i].saturating_add(1).min(hi).max(i + 1);
                continue;
            }
            if pred(i) {
                out.push(i);
            }
            i += 1;
        }
        out
    }

    /// The first depth-0 position in `lo..hi` where `pred` holds.
    pub(super) fn first_at_depth0(
        &self,
        lo: usize,
        hi: usize,
        pred: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut i = lo;
        while i < hi {
            if self.punct(i, b'(') || self.punct(i, b'[') {
                i = self.close[i].saturating_add(1).min(hi).max(i + 1);
                continue;
            }
            if pred(i) {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// Splits `lo..hi` at depth-0 commas.
    pub(super) fn split_commas(&self, lo: usize, hi: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = lo;
        for c in self.at_depth0(lo, hi, |i| self.punct(i, b',')) {
            out.push((start, c));
            start = c + 1;
        }
        out.push((start, hi));
        out
    }

    /// `[prefix] a.b.name` at `*i`: the relation's name; `*i` moves past it.
    pub(super) fn relation_ref(&self, i: &mut usize, prefix: &str) -> Result<Vec<u8>> {
        if self.is(*i, prefix) {
            *i += 1;
        }
        if !self.name_like(*i) {
            return self.unread();
        }
        let last = self.chain_end(*i);
        *i = last + 1;
        Ok(self.ident(last))
    }

    /// Follows `a.b.c` from `i`: the index of its last name.
    pub(super) fn chain_end(&self, mut i: usize) -> usize {
        while self.punct(i + 1, b'.') && self.name_like(i + 2) {
            i += 2;
        }
        i
    }
}
