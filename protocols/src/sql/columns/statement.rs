//! One whole statement: what it names, which relations stand for protected
//! ones, and the statement kinds read only for the relations they name
//! (`CREATE TABLE`, `CREATE INDEX`, utility statements).

use crate::sql::lexer::TokenKind;

use super::{
    Check, Result, MOVED, NOT_ALIAS, OTHER_SESSIONS, SESSIONS, STATISTICS, STATISTICS_RELATIONS,
    USED, UTILITY,
};

impl<'a> Check<'a> {
    /// The whole statement `lo..hi`.
    pub(super) fn statement(&mut self, lo: usize, hi: usize) -> Result<()> {
        // What it names decides whether it needs reading at all.
        let mut named = false;
        for i in lo..hi {
            let tok = self.t[i];
            if tok.kind == TokenKind::QuotedIdent && self.sql[tok.start as usize] != b'"' {
                return self.refuse(
                    &self.sql[tok.range()],
                    "is a Unicode-escaped identifier, which may spell a protected name (strict column rules)",
                );
            }
            if !self.name_like(i) {
                continue;
            }
            if let Some(s) = STATISTICS_RELATIONS
                .iter()
                .find(|s| self.name_is(i, s.as_bytes()))
            {
                return self.refuse(s.as_bytes(), STATISTICS);
            }
            if let Some(s) = OTHER_SESSIONS
                .iter()
                .find(|s| self.name_is(i, s.as_bytes()))
            {
                return self.refuse(s.as_bytes(), SESSIONS);
            }
            if let Some((_, cols)) = self.p.views.iter().find(|(v, _)| self.name_is(i, v)) {
                self.cols.extend(cols.iter().map(|c| c.to_vec()));
                named = true;
            }
            named |= self.p.columns.iter().any(|c| self.name_is(i, c))
                || self
                    .p
                    .relations
                    .as_ref()
                    .is_some_and(|r| r.iter().any(|r| self.name_is(i, r)));
        }
        if !named && self.p.relations.is_some() {
            return Ok(());
        }
        self.prepare_reading();
        self.register_relations(lo, hi);
        let first = self.word(lo).map(|w| w.to_ascii_lowercase());
        match first.as_deref() {
            _ if self.punct(lo, b'(') => self.query(lo, hi, true),
            Some(b"select" | b"with" | b"values" | b"table") => self.query(lo, hi, true),
            Some(b"insert") => self.insert(lo, hi, true),
            Some(b"update") => self.update(lo, hi, true),
            Some(b"delete") => self.delete(lo, hi, true),
            Some(b"copy") => self.copy(lo, hi),
            Some(b"declare") => {
                let Some(at) = self.first_at_depth0(lo, hi, |i| self.is(i, "for")) else {
                    return self.unread();
                };
                self.query(at + 1, hi, true)
            }
            Some(b"prepare") => {
                let Some(at) = self.first_at_depth0(lo, hi, |i| self.is(i, "as")) else {
                    return self.unread();
                };
                self.nested(|c| c.statement(at + 1, hi))
            }
            Some(b"create") => self.create(lo, hi),
            Some(w) if UTILITY.iter().any(|u| u.as_bytes() == w) => {
                // Naming a relation is fine; a protected column only in
                // statements about privileges and comments.
                if self.is_any(lo, &["grant", "revoke", "comment", "security"]) {
                    return Ok(());
                }
                if let Some(i) =
                    (lo..hi).find(|&i| self.name_like(i) && self.cols.contains(&self.ident(i)))
                {
                    return self.refuse(&self.ident(i), USED);
                }
                // A protected relation keeps its name and place: the
                // catalog was read at login under them.
                let relations: Vec<usize> = (lo..hi)
                    .filter(|&i| self.name_like(i) && self.p.relation(&self.ident(i)))
                    .collect();
                if let Some(&r) = relations.first() {
                    let moves = ["rename", "schema", "attach", "detach", "inherit", "owner"];
                    if (lo..hi).any(|i| self.is_any(i, &moves)) && !self.is(lo, "drop") {
                        return self.refuse(&self.ident(r), MOVED);
                    }
                    for &r in &relations {
                        let name = self.ident(r);
                        self.rels.insert(name.clone(), name);
                    }
                    // Expressions in it (a CHECK, a default, a USING) read
                    // nothing protected.
                    let mut i = lo;
                    while i < hi {
                        if self.punct(i, b'(') {
                            let end = self.skip_group(i, hi)?;
                            self.expr(i + 1, end - 1, false)?;
                            i = end;
                        } else {
                            i += 1;
                        }
                    }
                    if let Some(u) = (lo..hi).find(|&i| self.is(i, "using")) {
                        self.expr(u + 1, hi, false)?;
                    }
                }
                Ok(())
            }
            _ if !named => Ok(()),
            _ => self.unread(),
        }
    }

    /// Every name in `lo..hi` that stands for a protected relation, and the
    /// alias after it, before anything is read: whatever order the reading
    /// goes in, a whole-row use of one is then recognised. (Without the
    /// catalog, the names after FROM, JOIN, INTO, UPDATE, TABLE, USING, ONLY
    /// and a FROM list's commas count.)
    fn register_relations(&mut self, lo: usize, hi: usize) {
        let known = self.p.relations.is_some();
        for i in lo..hi {
            if !self.name_like(i) || self.punct(i + 1, b'.') || self.punct(i + 1, b'(') {
                continue;
            }
            let start = {
                let mut k = i;
                while k >= 2 && self.punct(k - 1, b'.') && self.name_like(k - 2) {
                    k -= 2;
                }
                k
            };
            let slot = start > lo
                && (self.is_any(
                    start - 1,
                    &[
                        "from", "join", "into", "update", "table", "using", "only", "lateral",
                    ],
                ) || self.punct(start - 1, b','));
            let name = self.ident(i);
            let protected = if known { self.p.relation(&name) } else { slot };
            if !protected {
                continue;
            }
            self.rels.insert(name.clone(), name.clone());
            let mut a = i + 1;
            if self.punct(a, b'*') {
                a += 1;
            }
            let explicit = self.is(a, "as");
            if explicit {
                a += 1;
            }
            let bare_ok = self.word(a).is_none_or(|w| {
                !NOT_ALIAS
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k.as_bytes()))
            });
            if a < hi && self.name_like(a) && (explicit || bare_ok) {
                let alias = self.ident(a);
                if alias == b"excluded" {
                    self.excluded_taken = true;
                }
                self.rels.insert(alias, name);
            }
        }
    }

    /// `CREATE TABLE name (...)` and `CREATE INDEX` name relations without
    /// reading them; `CREATE ... AS` and everything else that names
    /// something protected is refused.
    fn create(&mut self, lo: usize, hi: usize) -> Result<()> {
        // `AS query`, `AS EXECUTE`, `(LIKE t)`: a copy of what it names.
        let copies = (lo..hi).any(|i| self.is_any(i, &["as", "execute", "like"]));
        let object = (lo + 1..hi).find(|&i| {
            !self.is_any(
                i,
                &[
                    "or",
                    "replace",
                    "global",
                    "local",
                    "temp",
                    "temporary",
                    "unlogged",
                    "unique",
                ],
            )
        });
        match object {
            Some(i) if self.is(i, "index") => self.index(i, hi),
            // `PARTITION OF t`, `INHERITS (t)` of a protected relation: a new
            // name for its rows that the catalog read at login does not know.
            Some(i) if self.is(i, "table") && !copies && self.rels.is_empty() => Ok(()),
            _ => self.unread(),
        }
    }

    /// `CREATE INDEX ... ON t [USING m] (elements) [INCLUDE (...)] [WHERE p]`:
    /// a protected column may be indexed as itself, but an expression over it
    /// (whose errors would echo values) or a predicate on it may not.
    fn index(&mut self, at: usize, hi: usize) -> Result<()> {
        let Some(on) = (at..hi).find(|&i| self.is(i, "on")) else {
            return self.unread();
        };
        let Some(open) = (on..hi).find(|&i| self.punct(i, b'(')) else {
            return self.unread();
        };
        let end = self.skip_group(open, hi)?;
        for (a, b) in self.split_commas(open + 1, end - 1) {
            // `col [COLLATE c] [opclass] [ASC|DESC] [NULLS FIRST|LAST]`
            let plain = self.name_like(a) && !self.punct(a + 1, b'(') && !self.punct(a + 1, b'.');
            let rest_plain = (a + 1..b).all(|k| self.name_like(k) || self.punct(k, b'.'));
            if !(plain && rest_plain) {
                self.expr(a, b, false)?;
            }
        }
        if let Some(w) = (end..hi).find(|&i| self.is(i, "where")) {
            self.expr(w + 1, hi, false)?;
        }
        Ok(())
    }
}
