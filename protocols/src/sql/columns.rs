//! Strict column rules: a column under a masking rule may leave the server only
//! as itself.
//!
//! Masking sees values, not where they came from. `reverse(ssn)`, `ssn || 'x'`,
//! `encode(ssn::bytea, 'hex')`, `ARRAY[ssn]`, a view or `CREATE TABLE AS` that
//! renames the column, `SELECT t::text` (the whole row as one value): each hands
//! the value to the client in a form no column rule and no detector recognises.
//! Only the query side can tell.
//!
//! A statement that names nothing protected (no protected column, no relation
//! holding one, no view built on one) passes untouched. One that does must have
//! a shape this module reads completely, and is refused otherwise:
//!
//! - a query (`SELECT`, `VALUES`, `TABLE`, behind `WITH`, `DECLARE ... CURSOR
//!   FOR` and `PREPARE ... AS`) whose own result list may hold a protected column
//!   as a plain item under its own name (`ssn`, `t.ssn`, `ssn AS ssn`), `*` or
//!   `t.*`, which the masker then masks by name;
//! - `INSERT`, `UPDATE`, `DELETE` (with `RETURNING` like a result list) whose
//!   written columns may be protected (`INSERT INTO t (ssn)`, `SET ssn = $1`,
//!   `ON CONFLICT (ssn) DO UPDATE SET ssn = EXCLUDED.ssn`);
//! - `COPY t FROM`, and `COPY t (columns) TO` of unprotected columns;
//! - statements that only name relations (`DROP`, `TRUNCATE`, `LOCK`, `VACUUM`,
//!   `GRANT`, `CREATE TABLE (...)`, `CREATE INDEX`, ...).
//!
//! Everywhere else (an expression, a condition, an ordering, a join's `USING`
//! or `NATURAL`, a subquery, a CTE, a set operation, `SELECT ... INTO`, `CREATE
//! ... AS`, `COPY (query)`) a protected column, a whole-row reference to a
//! relation holding one (`t`, `t.*`, `t::text`), a `*` over one and a column
//! alias list on one (`FROM t AS x(a, b)`) are refused. Column statistics
//! (`pg_stats` and kin hold sample values of every column) are refused outright.
//! Views built on a protected column count as protected in every column.
//! Names compare without regard to case; `U&"..."` identifiers are refused.

use std::collections::HashSet;

use super::lexer::{lex, Dialect, Options, Token, TokenKind};

/// A lower-cased name.
pub type Name = Box<[u8]>;

/// What strict column rules protect on one upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    /// Column names under a rule, lower-cased (the last part of `table.column`).
    pub columns: Vec<Name>,
    /// Relations that hold a protected column (tables, views, ...), lower-cased.
    /// `None` when the catalogue could not be read: every relation counts.
    pub relations: Option<Vec<Name>>,
    /// Views built on a protected column, with all their column names.
    pub views: Vec<(Name, Vec<Name>)>,
    /// Every column name of each relation in `relations`: `t.x` for another
    /// `x` is attribute notation, a function of the whole row (`c.to_json`).
    pub relation_columns: Vec<(Name, Vec<Name>)>,
}

/// Why a statement was refused: the name it uses and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub name: String,
    pub why: &'static str,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.is_empty() {
            f.write_str(self.why)
        } else {
            write!(f, "`{}` {}", self.name, self.why)
        }
    }
}

const USED: &str = "is a protected column: it may be read only as a plain result column under its own name (strict column rules)";
const WHOLE_ROW: &str =
    "holds protected columns: a whole-row reference would pass them unmasked (strict column rules)";
const STAR: &str = "holds protected columns: `*` over it is allowed only in the result list of the statement itself (strict column rules)";
const RENAMED: &str =
    "holds protected columns: its columns may not be renamed by an alias list (strict column rules)";
const COPY_TO: &str = "holds protected columns: COPY it with a column list that leaves them out, or SELECT them (strict column rules)";
const COMPARED: &str =
    "holds protected columns: a NATURAL join would compare them (strict column rules)";
const ORDINAL: &str =
    "orders or groups by the position of a protected result column (strict column rules)";
const STATISTICS: &str =
    "holds sample values of every column, protected ones included (strict column rules)";
const ATTRIBUTE: &str = "holds protected columns: a name that is none of its columns calls a function of the whole row (attribute notation, strict column rules)";
const MOVED: &str = "holds protected columns: renaming, moving or re-parenting it would take it out of sight (strict column rules)";
const PROBED: &str = "holds protected columns: an upsert on a protected column that reports what it did (DO NOTHING, RETURNING, a WHERE) says which values exist (strict column rules)";
const UNREAD: &str = "names a protected column or a relation holding one in a statement Sluice cannot read completely (strict column rules)";

/// Views of other sessions' statements, whose text holds the values they sent.
const OTHER_SESSIONS: &[&str] = &[
    "pg_stat_activity",
    "pg_stat_get_activity",
    "pg_stat_statements",
    "pg_stat_statements_info",
];

const SESSIONS: &str = "shows other sessions' statements, values included (strict column rules)";

/// Catalog relations holding column statistics: sample values of every column.
const STATISTICS_RELATIONS: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext_data",
];

impl Protected {
    /// Whether there is anything to protect.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    fn relation(&self, name: &[u8]) -> bool {
        match &self.relations {
            None => true,
            Some(r) => r.iter().any(|r| **r == *name),
        }
    }
}

/// Checks `sql` (any number of statements) against strict column rules.
pub fn check(sql: &[u8], protected: &Protected) -> std::result::Result<(), Refusal> {
    if protected.is_empty() {
        return Ok(());
    }
    let mut toks = Vec::new();
    let mut readings = vec![Options::new(Dialect::Postgres)];
    // With standard_conforming_strings off the server reads backslashes in
    // plain strings as escapes: both readings must pass.
    if memchr::memchr(b'\\', sql).is_some() {
        readings.push(Options {
            backslash_quotes: true,
            ..Options::new(Dialect::Postgres)
        });
    }
    for opts in readings {
        lex(sql, opts, &mut toks).map_err(|_| Refusal {
            name: String::new(),
            why: "the statement cannot be read exactly, and a protected column might hide in it (strict column rules)",
        })?;
        for stmt in toks.split(|t| t.kind == TokenKind::Semicolon) {
            if !stmt.is_empty() {
                Check::new(sql, stmt, protected).statement(0, stmt.len())?;
            }
        }
    }
    Ok(())
}

/// Words that can follow a relation in `FROM` and so are not its alias unless
/// `AS` says so.
const NOT_ALIAS: &[&str] = &[
    "where",
    "join",
    "inner",
    "left",
    "right",
    "full",
    "cross",
    "natural",
    "on",
    "using",
    "group",
    "order",
    "having",
    "limit",
    "offset",
    "fetch",
    "for",
    "union",
    "intersect",
    "except",
    "window",
    "returning",
    "set",
    "tablesample",
    "from",
    "into",
    "default",
    "values",
    "select",
    "overriding",
    "lateral",
    "outer",
    "when",
    "do",
    "as",
];

/// Words that start a clause of a `SELECT` after its result list.
const SELECT_CLAUSES: &[&str] = &[
    "from", "into", "where", "group", "having", "window", "order", "limit", "offset", "fetch",
    "for",
];

/// Statements that name relations without reading their rows.
const UTILITY: &[&str] = &[
    "drop", "truncate", "lock", "vacuum", "analyze", "analyse", "reindex", "cluster", "refresh",
    "alter", "grant", "revoke", "comment", "security",
];

type Result<T> = std::result::Result<T, Refusal>;

struct Check<'a> {
    sql: &'a [u8],
    t: &'a [Token],
    p: &'a Protected,
    /// Protected column names here: the profile's, and every column of a
    /// view built on one that the statement names.
    cols: HashSet<Vec<u8>>,
    /// Names standing for a relation holding protected columns here (such
    /// relations, and their aliases), each with the relation's name.
    rels: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    /// How deep the reading is nested (bounded: the reader recurses).
    depth: usize,
    /// Some relation is aliased `excluded`: `excluded.x` is no longer the row
    /// being inserted.
    excluded_taken: bool,
    /// Matching parenthesis or bracket of each opening one.
    close: Vec<usize>,
}

impl<'a> Check<'a> {
    /// Allocates nothing: a statement that names nothing protected is only
    /// looked over (see [`Check::statement`]).
    fn new(sql: &'a [u8], t: &'a [Token], p: &'a Protected) -> Self {
        Check {
            sql,
            t,
            p,
            cols: HashSet::new(),
            rels: std::collections::HashMap::new(),
            depth: 0,
            excluded_taken: false,
            close: Vec::new(),
        }
    }

    /// What reading a statement needs: the matching brackets, the protected
    /// column names.
    fn prepare_reading(&mut self) {
        if self.close.len() != self.t.len() {
            self.close = vec![usize::MAX; self.t.len()];
            let mut open = Vec::new();
            for (i, tok) in self.t.iter().enumerate() {
                match tok.kind {
                    TokenKind::Punct(b'(' | b'[') => open.push(i),
                    TokenKind::Punct(b')' | b']') => {
                        if let Some(o) = open.pop() {
                            self.close[o] = i;
                        }
                    }
                    _ => {}
                }
            }
        }
        self.cols.extend(self.p.columns.iter().map(|c| c.to_vec()));
    }

    /// Whether the name at `i` is `name` (lower-cased), as [`Check::ident`]
    /// reads it; a plain word is compared in place.
    fn name_is(&self, i: usize, name: &[u8]) -> bool {
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

    fn refuse<T>(&self, name: &[u8], why: &'static str) -> Result<T> {
        Err(Refusal {
            name: String::from_utf8_lossy(name).into_owned(),
            why,
        })
    }

    fn unread<T>(&self) -> Result<T> {
        self.refuse(b"", UNREAD)
    }

    fn word(&self, i: usize) -> Option<&'a [u8]> {
        self.t
            .get(i)
            .filter(|t| t.kind == TokenKind::Word)
            .map(|t| &self.sql[t.range()])
    }

    fn is(&self, i: usize, kw: &str) -> bool {
        self.word(i)
            .is_some_and(|w| w.eq_ignore_ascii_case(kw.as_bytes()))
    }

    fn is_any(&self, i: usize, kws: &[&str]) -> bool {
        kws.iter().any(|k| self.is(i, k))
    }

    /// A clause keyword, not a label (`AS order`) or `WITHIN GROUP`.
    fn clause_word(&self, i: usize, list: &[&str]) -> bool {
        self.is_any(i, list) && !(i > 0 && self.is_any(i - 1, &["as", "within"]))
    }

    fn punct(&self, i: usize, c: u8) -> bool {
        self.t.get(i).is_some_and(|t| t.kind == TokenKind::Punct(c))
    }

    fn name_like(&self, i: usize) -> bool {
        self.t
            .get(i)
            .is_some_and(|t| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent))
    }

    /// An identifier's name, lower-cased (`U&"..."` is refused at the start).
    fn ident(&self, i: usize) -> Vec<u8> {
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
    fn attribute(&self, q: usize, x: usize) -> Result<()> {
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
    fn skip_group(&self, i: usize, hi: usize) -> Result<usize> {
        match self.close.get(i) {
            Some(&c) if c < hi => Ok(c + 1),
            _ => self.unread(),
        }
    }

    /// Depth-0 positions in `lo..hi` where `pred` holds.
    fn at_depth0(&self, lo: usize, hi: usize, pred: impl Fn(usize) -> bool) -> Vec<usize> {
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
    fn first_at_depth0(&self, lo: usize, hi: usize, pred: impl Fn(usize) -> bool) -> Option<usize> {
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
    fn split_commas(&self, lo: usize, hi: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = lo;
        for c in self.at_depth0(lo, hi, |i| self.punct(i, b',')) {
            out.push((start, c));
            start = c + 1;
        }
        out.push((start, hi));
        out
    }

    /// The whole statement `lo..hi`.
    fn statement(&mut self, lo: usize, hi: usize) -> Result<()> {
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

    /// A query in `lo..hi`; `top`: its result goes to the client as the
    /// statement's own (protected columns may be plain items of it).
    fn query(&mut self, lo: usize, hi: usize, top: bool) -> Result<()> {
        self.nested(|c| c.query_in(lo, hi, top))
    }

    /// Runs `f` one level deeper; past a few dozen levels the statement is
    /// refused (the reader recurses, and no real statement nests so deep).
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
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
    fn item(&mut self, lo: usize, hi: usize, top: bool, local: bool) -> Result<bool> {
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

    /// `[prefix] a.b.name` at `*i`: the relation's name; `*i` moves past it.
    fn relation_ref(&self, i: &mut usize, prefix: &str) -> Result<Vec<u8>> {
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
    fn chain_end(&self, mut i: usize) -> usize {
        while self.punct(i + 1, b'.') && self.name_like(i + 2) {
            i += 2;
        }
        i
    }

    /// An expression (or list of them) in `lo..hi`: nothing protected may be
    /// read in it. `excluded_ok`: `EXCLUDED.col` is the row being inserted.
    fn expr(&mut self, lo: usize, hi: usize, excluded_ok: bool) -> Result<()> {
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

    /// `FROM` items in `lo..hi`; whether any holds protected columns.
    fn sources(&mut self, lo: usize, hi: usize) -> Result<bool> {
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
    fn target(&mut self, i: &mut usize, hi: usize, alias_allowed: bool) -> Result<bool> {
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

    /// `INSERT INTO t [AS a] [(cols)] [OVERRIDING ...] source [ON CONFLICT ...] [RETURNING ...]`.
    fn insert(&mut self, lo: usize, hi: usize, top: bool) -> Result<()> {
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
    fn update(&mut self, lo: usize, hi: usize, top: bool) -> Result<()> {
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
    fn delete(&mut self, lo: usize, hi: usize, top: bool) -> Result<()> {
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
    fn copy(&mut self, lo: usize, hi: usize) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn protected() -> Protected {
        let b = |s: &str| s.as_bytes().to_vec().into_boxed_slice();
        Protected {
            columns: vec![b("ssn"), b("card_number")],
            relations: Some(vec![b("customers"), b("people"), b("ssn_view")]),
            views: vec![(b("ssn_view"), vec![b("id"), b("x")])],
            relation_columns: vec![
                (
                    b("customers"),
                    vec![b("id"), b("name"), b("ssn"), b("card_number")],
                ),
                (b("people"), vec![b("id"), b("ssn")]),
            ],
        }
    }

    #[track_caller]
    fn ok(sql: &str) {
        if let Err(e) = check(sql.as_bytes(), &protected()) {
            panic!("refused {sql:?}: {e}");
        }
    }

    #[test]
    fn plain_reads_and_writes_pass() {
        let mut bad = Vec::new();
        for sql in [
            "SELECT ssn FROM customers",
            "select id, ssn, name from customers where id = 1",
            "SELECT c.ssn FROM customers c",
            "SELECT c.ssn AS ssn FROM customers AS c",
            "SELECT public.customers.ssn FROM public.customers",
            "SELECT * FROM customers",
            "SELECT c.* FROM customers c JOIN orders o ON o.customer = c.id",
            "SELECT count(*) FROM customers",
            "SELECT DISTINCT ssn FROM customers",
            "TABLE customers",
            "WITH o AS (SELECT id FROM orders) SELECT ssn FROM customers JOIN o USING (id)",
            "DECLARE c CURSOR FOR SELECT ssn FROM customers",
            "PREPARE p (int) AS SELECT ssn FROM customers WHERE id = $1",
            "INSERT INTO customers (name, ssn) VALUES ($1, $2) RETURNING id",
            "INSERT INTO customers AS c (ssn) VALUES ('1') ON CONFLICT (ssn) DO UPDATE SET ssn = EXCLUDED.ssn",
            "UPDATE customers SET ssn = $1, name = 'x' WHERE id = 2 RETURNING ssn",
            "UPDATE customers SET (ssn, name) = ($1, $2) WHERE id = 3",
            "DELETE FROM customers WHERE id = 4 RETURNING *",
            "COPY customers (id, name) TO STDOUT",
            "COPY customers (name, ssn) FROM STDIN",
            "COPY customers FROM STDIN",
            "SELECT 'ssn' AS label, 2 * 3 FROM orders",
            "SELECT delete FROM t",
            "ALTER ROLE app PASSWORD 'card_number'",
            "SELECT t FROM t",
            "SELECT * FROM (SELECT * FROM orders) o",
            "CREATE INDEX ON customers (ssn)",
            "VACUUM customers",
            "DROP TABLE customers",
            "GRANT SELECT (ssn) ON customers TO auditor",
            "SELECT ssn FROM customers FOR UPDATE OF customers",
            "SELECT id FROM customers WHERE id IN (SELECT id FROM customers WHERE name = 'x')",
            "INSERT INTO notes SELECT id, name FROM customers",
            "SELECT c.id, o.total FROM customers c JOIN orders o ON o.customer = c.id WHERE c.name LIKE 'j%' ORDER BY c.id LIMIT 10",
            "SELECT c.ssn, o.total FROM customers AS c LEFT OUTER JOIN orders o ON o.customer = c.id",
            "WITH o AS (SELECT customer FROM orders) SELECT c.ssn FROM customers c, o WHERE o.customer = c.id",
            "SELECT ssn FROM customers ORDER BY id DESC LIMIT 5 OFFSET 1",
            "CREATE TABLE audit_copy (id int, ssn text)",
            "SELECT count(*) FROM customers TABLESAMPLE SYSTEM (10)",
            "(SELECT ssn FROM customers)",
            "SELECT c.id, c.name FROM customers c WHERE c.id = 1",
            "INSERT INTO customers (id, name) VALUES (1, 'x') ON CONFLICT DO NOTHING",
            "ALTER TABLE customers ADD COLUMN note text",
            "ALTER TABLE customers ADD CONSTRAINT pk PRIMARY KEY (id)",
            "CREATE INDEX ON customers (ssn, id DESC)",
            "INSERT INTO customers (id, name, ssn) VALUES (3, 'eve', '1') ON CONFLICT (id) DO UPDATE SET ssn = EXCLUDED.ssn RETURNING id",
            "SELECT name AS order FROM customers",
            "SELECT c.ssn FROM customers c JOIN orders o ON o.customer = c.id LEFT JOIN notes n ON n.id = o.id, people p WHERE p.id = c.id",
            "BEGIN; SELECT ssn FROM customers; COMMIT",
        ] {
            if let Err(e) = check(sql.as_bytes(), &protected()) {
                bad.push(format!("refused {sql:?}: {e}"));
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
    }

    #[test]
    fn transformed_reads_are_refused() {
        let mut bad = Vec::new();
        for sql in [
            "SELECT reverse(ssn) FROM customers",
            "SELECT encode(ssn::bytea, 'hex') FROM customers",
            "SELECT ssn || 'x' FROM customers",
            "SELECT ssn::text FROM customers",
            "SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers",
            "SELECT substr(ssn, 1, 3), substr(ssn, 4) FROM customers",
            "SELECT id FROM customers WHERE ssn LIKE '1%'",
            "SELECT id FROM customers ORDER BY ssn",
            "SELECT ssn AS x FROM customers",
            "SELECT ssn x FROM customers",
            "SELECT \"SSN\" || '' FROM customers",
            "SELECT U&\"\\0073sn\" FROM customers",
            "SELECT (SELECT ssn FROM customers LIMIT 1)",
            "SELECT x FROM (SELECT ssn AS x FROM customers) s",
            "SELECT * FROM (SELECT ssn FROM customers) s",
            "WITH c AS (SELECT ssn FROM customers) SELECT * FROM c",
            "SELECT reverse(b) FROM (SELECT * FROM customers) s(a, b)",
            "WITH c AS (SELECT * FROM customers) SELECT reverse(c.x) FROM c",
            "SELECT reverse(x) FROM customers AS c(a, b, x)",
            "SELECT customers::text FROM customers",
            "SELECT row_to_json(c) FROM customers c",
            "SELECT row_to_json(c.*) FROM customers c",
            "SELECT md5(t::text) FROM public.customers t",
            "SELECT name FROM orders UNION SELECT ssn FROM customers",
            "SELECT ssn FROM customers UNION ALL SELECT name FROM orders",
            "SELECT ssn INTO copy FROM customers",
            "SELECT * INTO copy FROM customers",
            "CREATE TABLE copy AS SELECT ssn FROM customers",
            "CREATE TABLE copy AS TABLE customers",
            "CREATE VIEW v AS SELECT ssn AS x FROM customers",
            "CREATE MATERIALIZED VIEW v AS SELECT * FROM customers",
            "INSERT INTO notes (body) SELECT ssn FROM customers",
            "INSERT INTO notes SELECT * FROM customers",
            "UPDATE customers SET name = ssn",
            "UPDATE orders o SET note = c.ssn FROM customers c WHERE c.id = o.customer",
            "INSERT INTO customers (ssn) VALUES ('1') RETURNING ssn || ''",
            "COPY customers TO STDOUT",
            "COPY public.customers TO STDOUT (FORMAT csv)",
            "COPY customers (ssn) TO STDOUT",
            "COPY (SELECT ssn FROM customers) TO STDOUT",
            "ALTER TABLE customers RENAME COLUMN ssn TO x",
            "SELECT * FROM (TABLE customers) t",
            // Found in review: brackets, FROM lists, aliases, TABLE, EXCLUDED,
            // NATURAL joins, ordinals, COPY BINARY, statistics.
            "SELECT ARRAY['', ssn, '']::text::bytea FROM customers",
            "SELECT encode(c::text::bytea,'base64') FROM orders o JOIN orders p ON true, customers c",
            "SELECT c::text FROM (customers c CROSS JOIN orders o)",
            "SELECT j::text FROM (customers CROSS JOIN orders) AS j",
            "SELECT row_to_json(no) FROM customers AS no",
            "SELECT row_to_json(skip) FROM customers skip",
            "SELECT c::text FROM customers * c",
            "SELECT reverse(x) FROM orders o JOIN orders p ON true, ssn_view v",
            "SELECT reverse(x) FROM (WITH q AS (SELECT 1) TABLE customers) s(a,b,x)",
            "INSERT INTO copy3 TABLE customers",
            "CREATE TABLE x(a,b,c) AS WITH q AS (SELECT 1) TABLE customers",
            "INSERT INTO notes(body) SELECT reverse(excluded.ssn) FROM customers excluded RETURNING body",
            "SELECT c.id, v.g FROM customers c NATURAL JOIN (SELECT 1 AS x, 2 AS g) v",
            "SELECT id, ssn FROM customers ORDER BY 2",
            "SELECT * FROM customers GROUP BY 1",
            "COPY BINARY customers TO STDOUT",
            "SELECT * FROM pg_stats WHERE attname = 'ssn'",
            "SELECT most_common_vals FROM pg_catalog.pg_stats",
            "DELETE FROM customers WHERE ssn = '1'",
            "UPDATE customers SET name = upper(ssn) WHERE id = 1",
            "WITH d AS (DELETE FROM customers WHERE id = 1 RETURNING ssn) SELECT reverse(ssn) FROM d",
            "WITH d AS (DELETE FROM customers WHERE id = 1 RETURNING *) SELECT * FROM d",
            "SELECT (SELECT ssn FROM customers LIMIT 1) AS ssn",
            "SELECT id FROM customers c JOIN orders o USING (ssn)",
            "MERGE INTO notes n USING customers c ON n.id = c.id WHEN NOT MATCHED THEN INSERT VALUES (c.id, c.ssn)",
            "SELECT ssn FROM customers WHERE id = 1 INTERSECT SELECT '078-05-1120'",
            // Second review: attribute notation, ordinals, index expressions,
            // ALTER, subscripts, long names, probing upserts.
            "SELECT c.to_json FROM customers c",
            "SELECT v.to_jsonb FROM ssn_view v",
            "SELECT translate(c.to_json::text, '0123456789', 'abcdefghij') FROM customers c",
            "UPDATE customers c SET name = c.to_json::text WHERE id = 1",
            "SELECT id FROM customers c WHERE c.row_to_json::text LIKE '%078%'",
            "TABLE customers ORDER BY 3",
            "(SELECT * FROM customers) ORDER BY 3",
            "SELECT DISTINCT ON (3) * FROM customers",
            "CREATE INDEX ON customers ((reverse(ssn)::int)) WHERE id = 2",
            "CREATE INDEX ON customers (id) WHERE ssn LIKE '0%'",
            "ALTER TABLE customers ADD CHECK ((reverse(to_json(customers)->>'card_number'))::int > 0)",
            "ALTER TABLE customers RENAME TO foo",
            "ALTER VIEW ssn_view RENAME TO v2",
            "ALTER TABLE customers SET SCHEMA other",
            "ALTER TABLE p ATTACH PARTITION customers DEFAULT",
            "CREATE TABLE p (LIKE customers) PARTITION BY LIST (id)",
            "UPDATE t SET j[c.ssn] = '1' FROM customers c",
            "UPDATE t SET j[(SELECT string_agg(ssn, ',') FROM customers)] = '2'",
            "INSERT INTO t (id, j[(SELECT string_agg(ssn, ',') FROM customers)]) VALUES (2, '3')",
            "INSERT INTO customers (id, ssn) VALUES (101, '1'), (102, '2') ON CONFLICT DO NOTHING RETURNING id",
            "INSERT INTO customers VALUES (101, 'x', '1') ON CONFLICT (ssn) DO NOTHING",
            // Third review.
            "SELECT translate(c::text,'0123456789','abcdefghij') AS order FROM customers c",
            "SELECT c.to_json AS where FROM customers c",
            "SELECT mode() WITHIN GROUP (ORDER BY translate(c::text,'0','a')) FROM customers c GROUP BY c.id",
            "TABLE customers ORDER BY ('x'||translate(row_to_json(customers)->>'ssn','0','a'))::int",
            "SELECT translate(query,'0123456789','abcdefghij') FROM pg_stat_activity",
            "SELECT query FROM pg_stat_statements",
            "CREATE TABLE x PARTITION OF customers FOR VALUES IN (1)",
            "CREATE TABLE x (extra int) INHERITS (customers)",
            "INSERT INTO customers (id,name,ssn) VALUES (999,'p','1') ON CONFLICT (ssn) DO UPDATE SET ssn=EXCLUDED.ssn RETURNING id",
            "INSERT INTO customers (id,name,ssn) VALUES (999,'p','1') ON CONFLICT (ssn) DO UPDATE SET name='x' WHERE customers.id > 0",
            "SELECT reverse(x) FROM ssn_view",
            "SELECT id FROM ssn_view WHERE x = '1'",
            "SELECT 1; SELECT reverse(ssn) FROM customers",
            "PREPARE p AS SELECT reverse(ssn) FROM customers",
            "DECLARE c CURSOR FOR SELECT ssn || '' FROM customers",
            "EXPLAIN ANALYZE SELECT reverse(ssn) FROM customers",
            "SELECT 'unterminated",
        ] {
            if check(sql.as_bytes(), &protected()).is_ok() {
                bad.push(sql);
            }
        }
        assert!(bad.is_empty(), "passed: {bad:#?}");
    }

    #[test]
    fn composite_expansions_are_refused() {
        for sql in [
            "SELECT (c).* FROM customers c",
            "SELECT (c).ssn FROM customers c",
        ] {
            assert!(check(sql.as_bytes(), &protected()).is_err(), "{sql}");
        }
    }

    #[test]
    fn views_on_protected_columns_read_plainly() {
        ok("SELECT id, x FROM ssn_view");
        ok("SELECT * FROM ssn_view");
    }

    #[test]
    fn unknown_relations_count_as_protected() {
        let p = Protected {
            relations: None,
            ..protected()
        };
        assert!(check(b"SELECT row_to_json(o) FROM orders o", &p).is_err());
        assert!(check(b"SELECT * FROM orders", &p).is_ok());
        assert!(check(b"SELECT n FROM (SELECT * FROM orders) s(n)", &p).is_err());
    }

    #[test]
    fn token_soup_never_panics() {
        let words = [
            "SELECT",
            "ssn",
            "customers",
            "c",
            "(",
            ")",
            ",",
            ".",
            "*",
            "AS",
            "FROM",
            "INTO",
            "SET",
            "=",
            "INSERT",
            "UPDATE",
            "COPY",
            "TO",
            "TABLE",
            "WITH",
            "x",
            ";",
            "'s'",
            "JOIN",
            "ON",
            "UNION",
            "RETURNING",
            "EXCLUDED",
            "CONFLICT",
            "DO",
            "VALUES",
            "U&\"a\"",
            "\"ssn\"",
            "DECLARE",
            "FOR",
            "PREPARE",
            "ssn_view",
            "id",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let p = protected();
        for _ in 0..20_000 {
            let mut sql = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            for k in 0..(state % 12) {
                let pick = (state.rotate_left(k as u32 * 5) % words.len() as u64) as usize;
                sql.push_str(words[pick]);
                sql.push(' ');
            }
            let _ = check(sql.as_bytes(), &p);
        }
    }

    #[test]
    fn chained_prepares_are_bounded() {
        let sql = format!(
            "{}SELECT ssn FROM customers",
            "PREPARE a AS ".repeat(10_000)
        );
        assert!(check(sql.as_bytes(), &protected()).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_followed() {
        let sql = format!(
            "SELECT 1 FROM {}\"customers\"{}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        assert!(check(sql.as_bytes(), &protected()).is_err());
        let sql = format!(
            "{}1{} UNION (SELECT 1 FROM customers)",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        assert!(check(sql.as_bytes(), &protected()).is_err());
        let sql = format!(
            "SELECT 1 FROM customers{}",
            " JOIN o ON true".repeat(50_000)
        );
        let r = check(sql.as_bytes(), &protected());
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn names_are_cut_to_63_bytes_as_the_server_cuts_them() {
        let long = "s".repeat(63);
        let p = Protected {
            columns: vec![long.as_bytes().into()],
            relations: Some(vec![b"t".to_vec().into_boxed_slice()]),
            ..Protected::default()
        };
        let sql = format!("SELECT reverse({long}ZZZ) FROM t");
        assert!(check(sql.as_bytes(), &p).is_err());
        let sql = format!("SELECT reverse(\"{long}é\") FROM t");
        assert!(check(sql.as_bytes(), &p).is_err());
    }

    #[test]
    fn nothing_protected_checks_nothing() {
        assert!(check(b"SELECT reverse(ssn) FROM customers", &Protected::default()).is_ok());
    }
}
