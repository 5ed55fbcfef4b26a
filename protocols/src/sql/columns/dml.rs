//! `INSERT`, `UPDATE`, `DELETE` and `COPY`: written columns, `ON CONFLICT`,
//! `RETURNING` lists and the `COPY` column list.

use super::{Check, Result, COPY_TO, PROBED, USED};

impl<'a> Check<'a> {
    /// `INSERT INTO t [AS a] [(cols)] [OVERRIDING ...] source [ON CONFLICT ...] [RETURNING ...]`.
    pub(super) fn insert(&mut self, lo: usize, hi: usize, top: bool) -> Result<()> {
        if !self.is(lo + 1, "into") {
            return self.unread();
        }
        let mut i = lo + 2;
        let protected = self.target(&mut i, hi, false)?;
        // Which columns are written: the list, or every column.
        let mut writes_protected = protected;
        if self.punct(i, b'(') && !self.is_any(i + 1, &["select", "with", "values", "table"]) {
            let end = self.skip_group(i, hi)?;
            writes_protected =
                (i + 1..end - 1).any(|k| self.name_like(k) && self.cols.contains(&self.ident(k)));
            self.subscripts(i + 1, end - 1, false)?;
            i = end;
        }
        if self.is(i, "overriding") {
            i += 3;
        }
        let conflict =
            self.first_at_depth0(i, hi, |k| self.is(k, "on") && self.is(k + 1, "conflict"));
        let returning = self.first_at_depth0(i, hi, |k| self.is(k, "returning"));
        let source_end = conflict.or(returning).unwrap_or(hi);
        if self.is(i, "default") && self.is(i + 1, "values") {
            if i + 2 != source_end {
                return self.unread();
            }
        } else if self.is(i, "values") {
            self.expr(i + 1, source_end, false)?;
        } else {
            self.query(i, source_end, false)?;
        }
        if let Some(c) = conflict {
            let end = returning.unwrap_or(hi);
            let mut k = c + 2;
            // Whether the conflict may be on a protected column: then which
            // rows conflicted says which protected values exist.
            let mut on_protected = true;
            if self.punct(k, b'(') {
                let target_end = self.skip_group(k, end)?; // the conflict target
                on_protected = (k + 1..target_end - 1)
                    .any(|x| self.name_like(x) && self.cols.contains(&self.ident(x)));
                k = target_end;
                if self.is(k, "where") {
                    let w = self
                        .first_at_depth0(k, end, |x| self.is(x, "do"))
                        .unwrap_or(end);
                    self.expr(k + 1, w, false)?;
                    k = w;
                }
            } else if self.is(k, "on") && self.is(k + 1, "constraint") && self.name_like(k + 2) {
                k += 3;
            }
            if !self.is(k, "do") {
                return self.unread();
            }
            if self.is(k + 1, "nothing") {
                if k + 2 != end {
                    return self.unread();
                }
                // Which rows were skipped (RETURNING, or the row count)
                // says which protected values already exist.
                if writes_protected {
                    return self.refuse(b"", PROBED);
                }
            } else if self.is(k + 1, "update") && self.is(k + 2, "set") {
                let w = self
                    .first_at_depth0(k + 3, end, |x| self.is(x, "where"))
                    .unwrap_or(end);
                // RETURNING (which row, `xmax`) or a WHERE (the row count)
                // would say whether the guess conflicted.
                if writes_protected && on_protected && (returning.is_some() || w < end) {
                    return self.refuse(b"", PROBED);
                }
                self.assignments(k + 3, w, true)?;
                if w < end {
                    self.expr(w + 1, end, true)?;
                }
            } else {
                return self.unread();
            }
        }
        match returning {
            Some(r) => self.returning(r + 1, hi, top),
            None => Ok(()),
        }
    }

    /// `RETURNING` items: a result list when the statement's own.
    fn returning(&mut self, lo: usize, hi: usize, top: bool) -> Result<()> {
        for (a, b) in self.split_commas(lo, hi) {
            self.item(a, b, top, true)?;
        }
        Ok(())
    }

    /// `SET a = x, (b, c) = (y, z)`: written columns may be protected, the
    /// values read nothing protected.
    fn assignments(&mut self, lo: usize, hi: usize, excluded_ok: bool) -> Result<()> {
        for (a, b) in self.split_commas(lo, hi) {
            let Some(eq) = self.first_at_depth0(a, b, |k| self.punct(k, b'=')) else {
                return self.unread();
            };
            // The target: `col`, `col[1]`, `col.field`, or `(a, b)`; a
            // subscript is an expression like any other.
            if !(self.name_like(a) || self.punct(a, b'(')) {
                return self.unread();
            }
            self.subscripts(a, eq, excluded_ok)?;
            self.expr(eq + 1, b, excluded_ok)?;
        }
        Ok(())
    }

    /// The subscripts (`col[expr]`) among written columns in `lo..hi`.
    fn subscripts(&mut self, lo: usize, hi: usize, excluded_ok: bool) -> Result<()> {
        for k in lo..hi {
            if self.punct(k, b'[') {
                let end = self.skip_group(k, hi)?;
                self.expr(k + 1, end - 1, excluded_ok)?;
            }
        }
        Ok(())
    }

    /// `UPDATE [ONLY] t [[AS] a] SET ... [FROM ...] [WHERE ...] [RETURNING ...]`.
    pub(super) fn update(&mut self, lo: usize, hi: usize, top: bool) -> Result<()> {
        let mut i = lo + 1;
        self.target(&mut i, hi, true)?;
        if !self.is(i, "set") {
            return self.unread();
        }
        let clause = |k: usize| self.is_any(k, &["from", "where", "returning"]);
        let marks = self.clause_ranges(self.at_depth0(i + 1, hi, clause), hi)?;
        // FROM first: it names what SET and WHERE may read.
        self.sources_at(&marks, "from")?;
        self.assignments(i + 1, marks.first().map_or(hi, |m| m.0), false)?;
        self.where_returning(&marks, top)
    }

    /// The `FROM`/`USING` list among `marks`.
    fn sources_at(&mut self, marks: &[(usize, usize)], kw: &str) -> Result<()> {
        for &(m, end) in marks {
            if self.is(m, kw) {
                self.sources(m + 1, end)?;
            }
        }
        Ok(())
    }

    /// `WHERE` (or `WHERE CURRENT OF c`) and `RETURNING` among `marks`.
    fn where_returning(&mut self, marks: &[(usize, usize)], top: bool) -> Result<()> {
        for &(m, end) in marks {
            if self.is(m, "where") {
                if !(self.is(m + 1, "current") && self.is(m + 2, "of")) {
                    self.expr(m + 1, end, false)?;
                }
            } else if self.is(m, "returning") {
                self.returning(m + 1, end, top)?;
            }
        }
        Ok(())
    }

    /// Clause keywords at `marks` as (keyword, end of its clause); a clause
    /// that comes twice is not SQL Sluice reads.
    fn clause_ranges(&self, marks: Vec<usize>, hi: usize) -> Result<Vec<(usize, usize)>> {
        let mut seen: Vec<Vec<u8>> = Vec::new();
        for &m in &marks {
            let w = self.word(m).unwrap_or_default().to_ascii_lowercase();
            if seen.contains(&w) {
                return self.unread();
            }
            seen.push(w);
        }
        Ok(marks
            .iter()
            .enumerate()
            .map(|(n, &m)| (m, marks.get(n + 1).copied().unwrap_or(hi)))
            .collect())
    }

    /// `DELETE FROM [ONLY] t [[AS] a] [USING ...] [WHERE ...] [RETURNING ...]`.
    pub(super) fn delete(&mut self, lo: usize, hi: usize, top: bool) -> Result<()> {
        if !self.is(lo + 1, "from") {
            return self.unread();
        }
        let mut i = lo + 2;
        self.target(&mut i, hi, true)?;
        let clause = |k: usize| self.is_any(k, &["using", "where", "returning"]);
        let marks = self.clause_ranges(self.at_depth0(i, hi, clause), hi)?;
        if marks.first().is_some_and(|m| m.0 != i) || (marks.is_empty() && i < hi) {
            return self.unread();
        }
        self.sources_at(&marks, "using")?;
        self.where_returning(&marks, top)
    }

    /// `COPY [BINARY] t [(cols)] FROM|TO ...`, `COPY (query) TO ...`.
    pub(super) fn copy(&mut self, lo: usize, hi: usize) -> Result<()> {
        let mut i = lo + 1;
        if self.punct(i, b'(') {
            let end = self.skip_group(i, hi)?;
            return self.query(i + 1, end - 1, false);
        }
        let name = self.relation_ref(&mut i, "binary")?;
        let mut k = i;
        let columns = self.punct(k, b'(').then_some(k);
        if let Some(c) = columns {
            k = self.skip_group(c, hi)?;
        }
        if self.is(k, "from") {
            return Ok(());
        }
        if !self.is(k, "to") {
            return self.unread();
        }
        match columns {
            Some(c) => {
                for x in c + 1..k - 1 {
                    if self.name_like(x) && self.cols.contains(&self.ident(x)) {
                        return self.refuse(&self.ident(x), USED);
                    }
                }
                Ok(())
            }
            None if self.p.relation(&name) => self.refuse(&name, COPY_TO),
            None => Ok(()),
        }
    }
}
