//! `FROM` items and the target relation of `INSERT`/`UPDATE`/`DELETE`:
//! which hold protected columns, under which aliases.

use super::{Check, Result, COMPARED, NOT_ALIAS, RENAMED, USED};

impl<'a> Check<'a> {
    /// `FROM` items in `lo..hi`; whether any holds protected columns.
    pub(super) fn sources(&mut self, lo: usize, hi: usize) -> Result<bool> {
        self.nested(|c| c.sources_in(lo, hi))
    }

    fn sources_in(&mut self, lo: usize, hi: usize) -> Result<bool> {
        let mut local = false;
        let mut natural = false;
        let mut i = lo;
        // An item starts the list and follows each comma; joins follow items.
        let mut item_next = true;
        loop {
            if item_next {
                local |= self.table_ref(&mut i, hi)?;
            }
            item_next = false;
            if i >= hi {
                break;
            }
            if self.punct(i, b',') {
                i += 1;
                item_next = true;
                continue;
            }
            // [NATURAL] [INNER | CROSS | LEFT|RIGHT|FULL [OUTER]] JOIN
            if self.is(i, "natural") {
                natural = true;
                i += 1;
            }
            if self.is_any(i, &["inner", "cross"]) {
                i += 1;
            } else if self.is_any(i, &["left", "right", "full"]) {
                i += 1;
                if self.is(i, "outer") {
                    i += 1;
                }
            }
            if !self.is(i, "join") {
                return self.unread();
            }
            i += 1;
            local |= self.table_ref(&mut i, hi)?;
            if self.is(i, "on") {
                let end = self
                    .first_at_depth0(i + 1, hi, |k| {
                        self.punct(k, b',')
                            || self.is_any(
                                k,
                                &["join", "natural", "inner", "cross", "left", "right", "full"],
                            )
                    })
                    .unwrap_or(hi);
                self.expr(i + 1, end, false)?;
                i = end;
            } else if self.is(i, "using") && self.punct(i + 1, b'(') {
                let end = self.skip_group(i + 1, hi)?;
                for k in i + 2..end - 1 {
                    if self.name_like(k) && self.cols.contains(&self.ident(k)) {
                        return self.refuse(&self.ident(k), USED);
                    }
                }
                i = end;
            }
            if i >= hi {
                break;
            }
        }
        if natural && local {
            return self.refuse(b"", COMPARED);
        }
        Ok(local)
    }

    /// One `FROM` item at `*i`; whether it holds protected columns.
    fn table_ref(&mut self, i: &mut usize, hi: usize) -> Result<bool> {
        if self.is(*i, "lateral") {
            *i += 1;
        }
        if self.is(*i, "only") {
            *i += 1;
        }
        let mut protected = false;
        // What an alias of this item stands for (a join's row: no relation).
        let mut relation: Vec<u8> = Vec::new();
        if self.punct(*i, b'(') {
            let end = self.skip_group(*i, hi)?;
            if self.is_any(*i + 1, &["select", "with", "values", "table"]) {
                self.query(*i + 1, end - 1, false)?;
            } else {
                protected = self.sources(*i + 1, end - 1)?;
            }
            *i = end;
        } else if self.is(*i, "rows") && self.is(*i + 1, "from") && self.punct(*i + 2, b'(') {
            let end = self.skip_group(*i + 2, hi)?;
            self.expr(*i + 3, end - 1, false)?;
            *i = end;
        } else if self.name_like(*i) {
            let last = self.chain_end(*i);
            if self.punct(last + 1, b'(') {
                // A function in FROM.
                let end = self.skip_group(last + 1, hi)?;
                self.expr(last + 2, end - 1, false)?;
                *i = end;
                if self.is(*i, "with") && self.is(*i + 1, "ordinality") {
                    *i += 2;
                }
            } else {
                let name = self.ident(last);
                protected = self.p.relation(&name);
                if protected {
                    self.rels.insert(name.clone(), name.clone());
                }
                relation = name;
                *i = last + 1;
                if self.punct(*i, b'*') {
                    *i += 1;
                }
            }
        } else {
            return self.unread();
        }
        if self.is(*i, "tablesample") {
            let mut k = *i + 2;
            if !self.punct(k, b'(') {
                return self.unread();
            }
            k = self.skip_group(k, hi)?;
            if self.is(k, "repeatable") && self.punct(k + 1, b'(') {
                k = self.skip_group(k + 1, hi)?;
            }
            self.expr(*i + 1, k, false)?;
            *i = k;
        }
        // An alias: `AS x` (any word), or a bare name that is no keyword.
        let explicit = self.is(*i, "as");
        let a = if explicit { *i + 1 } else { *i };
        let bare_ok = self.word(a).is_none_or(|w| {
            !NOT_ALIAS
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k.as_bytes()))
        });
        if self.name_like(a) && (explicit || bare_ok) {
            let alias = self.ident(a);
            if alias == b"excluded" {
                self.excluded_taken = true;
            }
            if protected {
                self.rels.insert(alias, relation);
            }
            *i = a + 1;
            if self.punct(*i, b'(') {
                if protected {
                    return self.refuse(&self.ident(a), RENAMED);
                }
                *i = self.skip_group(*i, hi)?;
            }
        } else if explicit {
            return self.unread();
        }
        Ok(protected)
    }

    /// The target of INSERT/UPDATE/DELETE at `*i` (`[ONLY] name [*] [[AS] alias]`).
    /// Whether it holds protected columns.
    pub(super) fn target(&mut self, i: &mut usize, hi: usize, alias_allowed: bool) -> Result<bool> {
        let name = self.relation_ref(i, "only")?;
        let protected = self.p.relation(&name);
        if protected {
            self.rels.insert(name.clone(), name.clone());
        }
        if self.punct(*i, b'*') {
            *i += 1;
        }
        let explicit = self.is(*i, "as");
        let a = if explicit { *i + 1 } else { *i };
        let bare_ok = alias_allowed
            && self.word(a).is_none_or(|w| {
                !NOT_ALIAS
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k.as_bytes()))
            });
        if a < hi && self.name_like(a) && (explicit || bare_ok) {
            let alias = self.ident(a);
            if alias == b"excluded" {
                self.excluded_taken = true;
            }
            if protected {
                self.rels.insert(alias, name);
            }
            *i = a + 1;
        }
        Ok(protected)
    }
}
