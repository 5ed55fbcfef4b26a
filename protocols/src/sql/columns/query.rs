//! Queries: `WITH`, set operations, result lists and the clauses after them,
//! and the expressions in which nothing protected may be read.

use crate::sql::lexer::TokenKind;

use super::{Check, Result, ORDINAL, SELECT_CLAUSES, STAR, USED, WHOLE_ROW};

impl<'a> Check<'a> {
    /// A query in `lo..hi`; `top`: its result goes to the client as the
    /// statement's own (protected columns may be plain items of it).
    pub(super) fn query(&mut self, lo: usize, hi: usize, top: bool) -> Result<()> {
        self.nested(|c| c.query_in(lo, hi, top))
    }

    /// Runs `f` one level deeper; past a few dozen levels the statement is
    /// refused (the reader recurses, and no real statement nests so deep).
    pub(super) fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        const MAX_DEPTH: usize = 48;
        if self.depth >= MAX_DEPTH {
            return self.unread();
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn query_in(&mut self, lo: usize, hi: usize, top: bool) -> Result<()> {
        if lo >= hi {
            return self.unread();
        }
        // `(query)`, and set operations (their result columns take the first
        // branch's names): each branch on its own, none the result.
        let ops = self.at_depth0(lo, hi, |i| {
            self.is_any(i, &["union", "intersect", "except"])
        });
        if !ops.is_empty() {
            let mut start = lo;
            for op in ops.into_iter().chain([hi]) {
                let mut b = start;
                while self.is_any(b, &["union", "intersect", "except", "all", "distinct"]) {
                    b += 1;
                }
                self.query_branch(b, op)?;
                start = op;
            }
            return Ok(());
        }
        if self.punct(lo, b'(') {
            let end = self.skip_group(lo, hi)?;
            self.query(lo + 1, end - 1, top)?;
            // ORDER BY / LIMIT after a parenthesised query.
            return self.clauses(end, hi);
        }
        if self.is(lo, "with") {
            return self.with(lo, hi, top);
        }
        if self.is(lo, "values") {
            return self.expr(lo + 1, hi, false);
        }
        if self.is(lo, "table") {
            let mut end = lo + 1;
            let name = self.relation_ref(&mut end, "only")?;
            if self.punct(end, b'*') {
                end += 1;
            }
            if self.p.relation(&name) && !top {
                return self.refuse(&name, STAR);
            }
            return self.clauses(end, hi);
        }
        if !self.is(lo, "select") {
            return self.unread();
        }
        let mut i = lo + 1;
        if self.is(i, "all") {
            i += 1;
        } else if self.is(i, "distinct") {
            i += 1;
            if self.is(i, "on") && self.punct(i + 1, b'(') {
                let end = self.skip_group(i + 1, hi)?;
                for (x, _) in self.split_commas(i + 2, end - 1) {
                    self.no_ordinal(x)?;
                }
                self.expr(i + 2, end - 1, false)?;
                i = end;
            }
        }
        let items_end = self
            .first_at_depth0(i, hi, |k| self.clause_word(k, SELECT_CLAUSES))
            .unwrap_or(hi);
        // FROM first: it says what the names in the result list stand for.
        let mut local = false;
        if self.is(items_end, "from") {
            let from_end = self
                .first_at_depth0(items_end + 1, hi, |k| {
                    self.clause_word(k, &SELECT_CLAUSES[1..])
                })
                .unwrap_or(hi);
            local = self.sources(items_end + 1, from_end)?;
        }
        for (a, b) in self.split_commas(i, items_end) {
            self.item(a, b, top, local)?;
        }
        let after_from = if self.is(items_end, "from") {
            self.first_at_depth0(items_end + 1, hi, |k| {
                self.clause_word(k, &SELECT_CLAUSES[1..])
            })
            .unwrap_or(hi)
        } else {
            items_end
        };
        self.clauses(after_from, hi)
    }

    /// One branch of a set operation: never the result itself.
    fn query_branch(&mut self, lo: usize, hi: usize) -> Result<()> {
        self.query(lo, hi, false)
    }

    /// `WITH [RECURSIVE] name [(cols)] AS [NOT] [MATERIALIZED] (body), ... main`.
    fn with(&mut self, lo: usize, hi: usize, top: bool) -> Result<()> {
        let mut i = lo + 1;
        if self.is(i, "recursive") {
            i += 1;
        }
        loop {
            if !self.name_like(i) {
                return self.unread();
            }
            i += 1;
            if self.punct(i, b'(') {
                i = self.skip_group(i, hi)?;
            }
            if !self.is(i, "as") {
                return self.unread();
            }
            i += 1;
            if self.is(i, "not") {
                i += 1;
            }
            if self.is(i, "materialized") {
                i += 1;
            }
            if !self.punct(i, b'(') {
                return self.unread();
            }
            let end = self.skip_group(i, hi)?;
            self.query_or_dml(i + 1, end - 1, false)?;
            i = end;
            // `SEARCH ...` / `CYCLE ...` clauses of recursive CTEs.
            while i < hi
                && !self.punct(i, b',')
                && !self.is_any(
                    i,
                    &[
                        "select", "insert", "update", "delete", "values", "table", "merge",
                    ],
                )
                && !self.punct(i, b'(')
            {
                if !self.is_any(
                    i,
                    &[
                        "search", "cycle", "depth", "breadth", "first", "by", "set", "to",
                        "default", "using",
                    ],
                ) && !self.name_like(i)
                    && !self.punct(i, b',')
                {
                    return self.unread();
                }
                i += 1;
            }
            if self.punct(i, b',') {
                i += 1;
                continue;
            }
            break;
        }
        self.query_or_dml(i, hi, top)
    }

    /// A query or data-modifying statement (a CTE's body, or the statement
    /// after its CTEs).
    fn query_or_dml(&mut self, lo: usize, hi: usize, top: bool) -> Result<()> {
        match self.word(lo).map(|w| w.to_ascii_lowercase()).as_deref() {
            Some(b"insert") => self.insert(lo, hi, top),
            Some(b"update") => self.update(lo, hi, top),
            Some(b"delete") => self.delete(lo, hi, top),
            _ => self.query(lo, hi, top),
        }
    }

    /// The clauses after `FROM` (or after a result list without one).
    fn clauses(&mut self, lo: usize, hi: usize) -> Result<()> {
        let starts = self.at_depth0(lo, hi, |k| self.clause_word(k, &SELECT_CLAUSES[1..]));
        // A FROM that was not read as the FROM clause: nothing here is read
        // in the right order.
        if self
            .first_at_depth0(lo, hi, |k| self.clause_word(k, &["from"]))
            .is_some()
        {
            return self.unread();
        }
        if starts.first().is_some_and(|&s| s != lo) || (starts.is_empty() && lo < hi) {
            return self.unread();
        }
        for (n, &s) in starts.iter().enumerate() {
            let end = starts.get(n + 1).copied().unwrap_or(hi);
            let kw = self.word(s).unwrap_or_default().to_ascii_lowercase();
            match kw.as_slice() {
                b"into" => return self.unread(),
                b"group" | b"order" => {
                    let mut a = s + 1;
                    if self.is(a, "by") {
                        a += 1;
                    }
                    for (x, y) in self.split_commas(a, end) {
                        self.no_ordinal(x)?;
                        self.expr(x, y, false)?;
                    }
                }
                // `FOR UPDATE OF t`: the names are relations, not values.
                b"for" => {
                    if (s + 1..end).any(|k| !self.name_like(k) && !self.punct(k, b',')) {
                        return self.unread();
                    }
                }
                _ => self.expr(s + 1, end, false)?,
            }
        }
        Ok(())
    }

    /// An ordering or grouping by position: which column it is cannot be
    /// told from the text everywhere (`TABLE t ORDER BY 3`), and ordering by
    /// a protected one sorts rows the caller inserted among the secret ones.
    fn no_ordinal(&self, at: usize) -> Result<()> {
        if self.t.get(at).is_some_and(|t| t.kind == TokenKind::Number) {
            return self.refuse(b"", ORDINAL);
        }
        Ok(())
    }

    /// One item of a result list (or `RETURNING`); whether it returns a
    /// protected column (plain, or under `*`).
    pub(super) fn item(&mut self, lo: usize, hi: usize, top: bool, local: bool) -> Result<bool> {
        if lo >= hi {
            return self.unread();
        }
        // `*`
        if hi == lo + 1 && self.punct(lo, b'*') {
            if local && !top {
                return self.refuse(b"", STAR);
            }
            return Ok(local);
        }
        // `a.b.*`
        if self.name_like(lo) {
            let last = self.chain_end(lo);
            if self.punct(last + 1, b'.') && self.punct(last + 2, b'*') && last + 3 == hi {
                let q = self.ident(last);
                let protected = self.rels.contains_key(&q);
                if protected && !top {
                    return self.refuse(&q, WHOLE_ROW);
                }
                return Ok(protected);
            }
            // `a.b.col [[AS] label]`
            let label = if last + 1 == hi {
                None
            } else if self.is(last + 1, "as") && last + 3 == hi && self.name_like(last + 2) {
                Some(self.ident(last + 2))
            } else if last + 2 == hi && self.name_like(last + 1) {
                Some(self.ident(last + 1))
            } else {
                return self.expr(lo, hi, false).map(|()| false);
            };
            let col = self.ident(last);
            if last > lo {
                self.attribute(last - 2, last)?;
            }
            if self.rels.contains_key(&col) {
                return self.refuse(&col, WHOLE_ROW);
            }
            if self.cols.contains(&col) {
                if top && label.as_ref().is_none_or(|l| *l == col) {
                    return Ok(true);
                }
                return self.refuse(&col, USED);
            }
            return Ok(false);
        }
        self.expr(lo, hi, false).map(|()| false)
    }

    /// An expression (or list of them) in `lo..hi`: nothing protected may be
    /// read in it. `excluded_ok`: `EXCLUDED.col` is the row being inserted.
    pub(super) fn expr(&mut self, lo: usize, hi: usize, excluded_ok: bool) -> Result<()> {
        let mut i = lo;
        while i < hi {
            let tok = self.t[i];
            if tok.kind == TokenKind::Punct(b'(')
                && self.is_any(i + 1, &["select", "with", "values", "table"])
            {
                let end = self.skip_group(i, hi)?;
                self.query(i + 1, end - 1, false)?;
                i = end;
                continue;
            }
            if tok.kind == TokenKind::Punct(b'(')
                && self.is_any(i + 1, &["insert", "update", "delete"])
            {
                return self.unread();
            }
            if !self.name_like(i) {
                i += 1;
                continue;
            }
            // A type or label after AS, a function's name.
            if (i > lo && self.is(i - 1, "as")) || self.punct(i + 1, b'(') {
                i += 1;
                continue;
            }
            let name = self.ident(i);
            if self.punct(i + 1, b'.') {
                // A qualifier: `t.*` is the whole row, `t.col` is decided by col.
                if self.punct(i + 2, b'*') && self.rels.contains_key(&name) {
                    return self.refuse(&name, WHOLE_ROW);
                }
                i += 1;
                continue;
            }
            let qualifier = (i >= 2 && self.punct(i - 1, b'.') && self.name_like(i - 2))
                .then(|| self.ident(i - 2));
            if qualifier.is_some() {
                self.attribute(i - 2, i)?;
            }
            if self.cols.contains(&name) {
                let excluded = excluded_ok
                    && !self.excluded_taken
                    && qualifier.as_deref() == Some(&b"excluded"[..])
                    && i >= 3
                    && !self.punct(i - 3, b'.');
                if !excluded {
                    return self.refuse(&name, USED);
                }
            } else if self.rels.contains_key(&name) {
                return self.refuse(&name, WHOLE_ROW);
            }
            i += 1;
        }
        Ok(())
    }
}
