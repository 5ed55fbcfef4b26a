//! Strict column rules: a column under a masking rule may leave the server only
//! as itself.
//!
//! Masking sees values, not where they came from. `reverse(ssn)`, `ssn || 'x'`,
//! `encode(ssn::bytea, 'hex')`, a view or `CREATE TABLE AS` that renames the
//! column, `SELECT t::text` (the whole row as one value): each hands the value
//! to the client in a form no column rule and no detector recognises. Only the
//! query side can tell, so under strict column rules a statement may name a
//! protected column only where its value reaches the client unchanged, as a
//! result column the masker then masks by name:
//!
//! - a plain item of the select list of the statement's own query (`SELECT ssn`,
//!   `SELECT t.ssn`, `SELECT *`, also in `DECLARE ... CURSOR FOR` and `PREPARE
//!   ... AS`), or of a `RETURNING` list; an alias may only repeat the name;
//! - where a value is written, not read: an `INSERT` or `COPY ... FROM` column
//!   list, the target of `SET ssn = ...`, an `ON CONFLICT (...)` target, and
//!   `EXCLUDED.ssn` (the row the client itself sent).
//!
//! Anything else is refused: the column in an expression, function call,
//! condition, ordering or grouping, a subquery or CTE that selects it, a set
//! operation, `SELECT ... INTO`, `CREATE TABLE/VIEW ... AS`, `COPY ... TO` of a
//! relation holding it, a whole-row reference to such a relation (`t`, `t.*`
//! outside the select list), a `*` over one anywhere but the top-level select
//! list, and column aliases on it (`FROM t AS x(a, b)`). Views built on a
//! protected column count as protected in every column (the catalogue cannot
//! say which of their columns carries it).
//!
//! The check is lexical and errs towards refusal: identifiers compare without
//! regard to case, and `U&"..."` identifiers (which can spell any name) are
//! refused outright.

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
const STAR: &str =
    "holds protected columns: `*` over it is allowed only in the select list of the query itself (strict column rules)";
const RENAMED: &str =
    "holds protected columns: its columns may not be renamed by an alias list (strict column rules)";
const COPY_TO: &str =
    "holds protected columns: COPY it with a column list that leaves them out, or SELECT them (strict column rules)";

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
pub fn check(sql: &[u8], protected: &Protected) -> Result<(), Refusal> {
    if protected.is_empty() {
        return Ok(());
    }
    let unreadable = || {
        Refusal {
        name: String::new(),
        why: "the statement cannot be read exactly, and a protected column might hide in it (strict column rules)",
    }
    };
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
        lex(sql, opts, &mut toks).map_err(|_| unreadable())?;
        for stmt in toks.split(|t| t.kind == TokenKind::Semicolon) {
            if !stmt.is_empty() {
                Statement::new(sql, stmt, protected)?.check()?;
            }
        }
    }
    Ok(())
}

/// What a statement's main query is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Main {
    /// A query whose rows go to the client (`SELECT`, `VALUES`, `TABLE`, also
    /// behind `WITH`, `DECLARE ... FOR` and `PREPARE ... AS`).
    Query,
    Insert,
    Update,
    Delete,
    Merge,
    Copy,
    Other,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Clause {
    None,
    Select,
    /// Table position: `FROM`, `JOIN`, `USING` (of MERGE/DELETE).
    From,
    /// `INTO`, `UPDATE`, `TABLE`, `COPY`: the next name is a relation.
    Into,
    /// Conditions, ordering, grouping, values: any expression.
    Expr,
    /// `SET a = ...` of UPDATE, MERGE and ON CONFLICT.
    Set,
    Returning,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Paren {
    Top,
    /// A function's arguments.
    Call,
    /// A subquery.
    Query,
    /// A list of columns written, not read: `INSERT INTO t (a, b)`,
    /// `COPY t (a) FROM`, `SET (a, b) =`, `ON CONFLICT (a)`.
    Columns,
    Other,
}

#[derive(Clone, Copy)]
struct Level {
    paren: Paren,
    clause: Clause,
}

struct Statement<'a> {
    sql: &'a [u8],
    toks: &'a [Token],
    p: &'a Protected,
    main: Main,
    /// The select list at depth 0 is the query's own result (no set
    /// operation, no `SELECT ... INTO`).
    top_result: bool,
    /// `COPY ... FROM`.
    copy_from: bool,
    /// Protected relations named in table position, and their aliases.
    names: Vec<Vec<u8>>,
    /// Whether any relation in table position holds protected columns.
    any_protected_relation: bool,
    /// Column names of the views named in it.
    view_columns: Vec<&'a [u8]>,
    /// Per token: in table position (a relation's name or its alias).
    table_pos: Vec<bool>,
}

/// Words that can follow a relation in `FROM` and so are never its alias.
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
    "values",
    "default",
    "select",
    "tablesample",
    "with",
    "do",
    "when",
    "then",
    "overriding",
    "lateral",
    "only",
    "outer",
    "into",
    "from",
    "to",
    "as",
    "is",
    "and",
    "or",
    "not",
    "in",
    "of",
    "nowait",
    "skip",
    "no",
];

fn lower(b: &[u8]) -> Vec<u8> {
    b.to_ascii_lowercase()
}

impl<'a> Statement<'a> {
    fn new(sql: &'a [u8], toks: &'a [Token], p: &'a Protected) -> Result<Self, Refusal> {
        let mut s = Statement {
            sql,
            toks,
            p,
            main: Main::Other,
            top_result: false,
            copy_from: false,
            names: Vec::new(),
            any_protected_relation: false,
            view_columns: Vec::new(),
            table_pos: vec![false; toks.len()],
        };
        s.main = s.main_query();
        let depth0 = s.depth0();
        let has = |kw: &str| depth0.iter().any(|&i| s.is(i, kw));
        let top_result = s.main == Main::Query
            && !has("union")
            && !has("intersect")
            && !has("except")
            && !has("into");
        let copy_from = s.main == Main::Copy && has("from");
        (s.top_result, s.copy_from) = (top_result, copy_from);
        s.relations()?;
        Ok(s)
    }

    fn word(&self, i: usize) -> Option<&'a [u8]> {
        self.toks
            .get(i)
            .filter(|t| t.kind == TokenKind::Word)
            .map(|t| &self.sql[t.range()])
    }

    fn is(&self, i: usize, kw: &str) -> bool {
        self.word(i)
            .is_some_and(|w| w.eq_ignore_ascii_case(kw.as_bytes()))
    }

    fn punct(&self, i: usize, c: u8) -> bool {
        self.toks
            .get(i)
            .is_some_and(|t| t.kind == TokenKind::Punct(c))
    }

    /// An identifier's name, lower-cased; `Err` for `U&"..."`.
    fn ident(&self, i: usize) -> Option<Result<Vec<u8>, Refusal>> {
        let t = self.toks.get(i)?;
        let raw = &self.sql[t.range()];
        match t.kind {
            TokenKind::Word => Some(Ok(lower(raw))),
            TokenKind::QuotedIdent if raw.first() == Some(&b'"') => {
                let inner = &raw[1..raw.len() - 1];
                let mut out = Vec::with_capacity(inner.len());
                let mut k = 0;
                while k < inner.len() {
                    out.push(inner[k].to_ascii_lowercase());
                    k += if inner[k] == b'"' { 2 } else { 1 };
                }
                Some(Ok(out))
            }
            TokenKind::QuotedIdent => Some(Err(Refusal {
                name: String::from_utf8_lossy(raw).into_owned(),
                why: "is a Unicode-escaped identifier, which may spell a protected column (strict column rules)",
            })),
            _ => None,
        }
    }

    /// Indexes of the tokens at parenthesis depth 0.
    fn depth0(&self) -> Vec<usize> {
        let mut depth = 0i32;
        let mut out = Vec::new();
        for (i, t) in self.toks.iter().enumerate() {
            match t.kind {
                TokenKind::Punct(b'(') => depth += 1,
                TokenKind::Punct(b')') => depth -= 1,
                _ if depth == 0 => out.push(i),
                _ => {}
            }
        }
        out
    }

    fn main_query(&self) -> Main {
        let first = self.word(0).map(lower).unwrap_or_default();
        let query_or_dml = |from: usize| {
            self.depth0()
                .into_iter()
                .filter(|&i| i >= from)
                .find_map(|i| match self.word(i).map(lower).as_deref() {
                    Some(b"select" | b"values" | b"table") => Some(Main::Query),
                    Some(b"insert") => Some(Main::Insert),
                    Some(b"update") => Some(Main::Update),
                    Some(b"delete") => Some(Main::Delete),
                    Some(b"merge") => Some(Main::Merge),
                    _ => None,
                })
                .unwrap_or(Main::Other)
        };
        match first.as_slice() {
            b"select" | b"values" | b"table" => Main::Query,
            b"insert" => Main::Insert,
            b"update" => Main::Update,
            b"delete" => Main::Delete,
            b"merge" => Main::Merge,
            b"copy" => Main::Copy,
            b"with" => query_or_dml(1),
            b"declare" | b"prepare" => {
                let kw = if first == b"declare" { "for" } else { "as" };
                match self.depth0().into_iter().find(|&i| self.is(i, kw)) {
                    Some(at) => query_or_dml(at + 1),
                    None => Main::Other,
                }
            }
            _ => Main::Other,
        }
    }

    /// Walks back over `a.b.` before token `i`: the index of the chain's first name.
    fn chain_start(&self, mut i: usize) -> usize {
        while i >= 2
            && self.punct(i - 1, b'.')
            && matches!(
                self.toks[i - 2].kind,
                TokenKind::Word | TokenKind::QuotedIdent
            )
        {
            i -= 2;
        }
        i
    }

    /// Follows `a.b.c` from `i`: the index of its last name.
    fn chain_end(&self, mut i: usize) -> usize {
        while self.punct(i + 1, b'.')
            && self
                .toks
                .get(i + 2)
                .is_some_and(|t| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent))
        {
            i += 2;
        }
        i
    }

    /// Pre-pass: relations in table position, their aliases, the views named.
    fn relations(&mut self) -> Result<(), Refusal> {
        let mut levels = vec![Level {
            paren: Paren::Top,
            clause: Clause::None,
        }];
        let mut i = 0;
        while i < self.toks.len() {
            self.step(&mut levels, i);
            let clause = levels.last().map_or(Clause::None, |l| l.clause);
            let t = self.toks[i];
            let name_like = matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent);
            let table_slot = matches!(clause, Clause::From | Clause::Into)
                && i > 0
                && (self.punct(i - 1, b',')
                    || [
                        "from", "join", "only", "into", "update", "using", "table", "lateral",
                    ]
                    .iter()
                    .any(|kw| self.is(i - 1, kw))
                    || (i == 1 && self.is(0, "copy")));
            let keyword = self.word(i).is_some_and(|w| {
                NOT_ALIAS
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k.as_bytes()))
            });
            if !(name_like && table_slot) || keyword || self.punct(self.chain_end(i) + 1, b'(') {
                i += 1;
                continue;
            }
            let last = self.chain_end(i);
            for k in (i..=last).step_by(2) {
                self.table_pos[k] = true;
            }
            let name = self.ident(last).expect("a name")?;
            let at = i;
            let protected = self.p.relation(&name);
            if let Some((_, cols)) = self.p.views.iter().find(|(v, _)| **v == *name) {
                self.view_columns.extend(cols.iter().map(|c| &**c));
            }
            // An alias: `t x`, `t AS x`, and then perhaps `x(a, b)`.
            let mut a = last + 1;
            if self.is(a, "as") {
                a += 1;
            }
            let alias = match self.toks.get(a).map(|t| t.kind) {
                Some(TokenKind::Word) => {
                    let w = self.word(a).unwrap_or_default();
                    !NOT_ALIAS
                        .iter()
                        .any(|k| w.eq_ignore_ascii_case(k.as_bytes()))
                }
                Some(TokenKind::QuotedIdent) => true,
                _ => false,
            };
            if protected {
                self.any_protected_relation = true;
                self.names.push(name.clone());
            }
            if alias {
                self.table_pos[a] = true;
                let alias_name = self.ident(a).expect("a name")?;
                // `INSERT INTO t AS x (a, b)`: the list is the columns written.
                if self.punct(a + 1, b'(') && clause != Clause::Into && protected {
                    return Err(Refusal {
                        name: String::from_utf8_lossy(&name).into_owned(),
                        why: RENAMED,
                    });
                }
                if protected {
                    self.names.push(alias_name);
                }
                i = a + 1;
            } else {
                i = last + 1;
            }
            // `TABLE t` is `SELECT * FROM t`: only as the query itself.
            let table_query = self.is(at - 1, "table")
                && (at == 1
                    || self.punct(at - 2, b'(')
                    || ["union", "intersect", "except", "all", "distinct", "as"]
                        .iter()
                        .any(|kw| self.is(at - 2, kw)));
            if protected && table_query && !(at == 1 && self.top_result) {
                return Err(Refusal {
                    name: String::from_utf8_lossy(&name).into_owned(),
                    why: STAR,
                });
            }
            if self.main == Main::Copy && protected && !self.copy_from && !self.punct(i, b'(') {
                return Err(Refusal {
                    name: String::from_utf8_lossy(&name).into_owned(),
                    why: COPY_TO,
                });
            }
        }
        Ok(())
    }

    /// Updates the clause and paren levels for token `i` (before it is judged).
    fn step(&self, levels: &mut Vec<Level>, i: usize) {
        let t = self.toks[i];
        match t.kind {
            TokenKind::Punct(b'(') => {
                let prev_name = i > 0
                    && matches!(
                        self.toks[i - 1].kind,
                        TokenKind::Word | TokenKind::QuotedIdent
                    );
                let clause = levels.last().map_or(Clause::None, |l| l.clause);
                let next_query = ["select", "with", "values", "table"]
                    .iter()
                    .any(|kw| self.is(i + 1, kw));
                let paren = if next_query {
                    Paren::Query
                } else if self.columns_list(i, clause) {
                    Paren::Columns
                } else if prev_name
                    && ![
                        "in", "exists", "any", "all", "some", "values", "array", "row", "on",
                        "using", "and", "or", "not", "as", "when", "then", "else", "where",
                    ]
                    .iter()
                    .any(|kw| self.is(i - 1, kw))
                {
                    Paren::Call
                } else {
                    Paren::Other
                };
                let clause = match paren {
                    Paren::Query | Paren::Columns => Clause::None,
                    _ => Clause::Expr,
                };
                levels.push(Level { paren, clause });
            }
            TokenKind::Punct(b')') if levels.len() > 1 => {
                levels.pop();
            }
            TokenKind::Word => {
                let Some(level) = levels.last_mut() else {
                    return;
                };
                let w = &self.sql[t.range()];
                let w = lower(w);
                let in_from = level.clause == Clause::From;
                level.clause = match w.as_slice() {
                    b"select" => Clause::Select,
                    b"from" | b"join" => Clause::From,
                    b"using" if in_from && !self.punct(i + 1, b'(') => Clause::From,
                    b"using" if matches!(self.main, Main::Merge | Main::Delete) => Clause::From,
                    b"into" | b"update" | b"table" | b"copy" => Clause::Into,
                    b"set" if matches!(self.main, Main::Update | Main::Merge | Main::Insert) => {
                        Clause::Set
                    }
                    b"returning" => Clause::Returning,
                    b"where" | b"on" | b"having" | b"group" | b"order" | b"limit" | b"offset"
                    | b"window" | b"fetch" | b"values" | b"when" | b"then" | b"by" => {
                        // `ON CONFLICT` and `MERGE ... ON` are conditions too.
                        Clause::Expr
                    }
                    b"union" | b"intersect" | b"except" => Clause::None,
                    _ => level.clause,
                };
            }
            _ => {}
        }
    }

    /// Whether the `(` at `i` opens a list of columns written to.
    fn columns_list(&self, i: usize, clause: Clause) -> bool {
        if i == 0 {
            return false;
        }
        if self.is(i - 1, "insert") || self.is(i - 1, "conflict") {
            return true;
        }
        if clause == Clause::Set && (self.is(i - 1, "set") || self.punct(i - 1, b',')) {
            return true;
        }
        // `INTO t (`, `INTO t AS x (`, `COPY t (`.
        if clause != Clause::Into
            || !matches!(
                self.toks[i - 1].kind,
                TokenKind::Word | TokenKind::QuotedIdent
            )
        {
            return false;
        }
        let mut k = self.chain_start(i - 1);
        if k >= 2 && self.is(k - 1, "as") {
            k = self.chain_start(k - 2);
        }
        k >= 1 && (self.is(k - 1, "into") || (self.is(k - 1, "copy") && self.copy_from))
    }

    fn check(&self) -> Result<(), Refusal> {
        let mut levels = vec![Level {
            paren: Paren::Top,
            clause: Clause::None,
        }];
        for i in 0..self.toks.len() {
            self.step(&mut levels, i);
            let depth = levels.len() - 1;
            let level = *levels.last().expect("the top level");
            let t = self.toks[i];
            if t.kind == TokenKind::Punct(b'*') {
                self.star(i, depth, level)?;
                continue;
            }
            if !matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent) || self.table_pos[i] {
                continue;
            }
            // A function's name, or a qualifier (the name after it decides),
            // or a keyword with its string (`PASSWORD 'x'`).
            let next_string = self
                .toks
                .get(i + 1)
                .is_some_and(|n| n.kind == TokenKind::String);
            if self.punct(i + 1, b'(')
                || self.punct(i + 1, b'.')
                || (t.kind == TokenKind::Word && next_string)
            {
                continue;
            }
            let name = self.ident(i).expect("a name")?;
            // A name being given (`AS x`, or `ssn ssn` after a plain result).
            let alias = i > 0
                && (self.is(i - 1, "as")
                    || (self.ident(i - 1).and_then(Result::ok).as_deref() == Some(&name[..])
                        && self.plain_result(i - 1, depth, level, Some(&name))));
            if alias {
                continue;
            }
            let column = self.p.columns.iter().any(|c| **c == *name)
                || self.view_columns.iter().any(|c| **c == *name);
            if column && !self.column_allowed(i, depth, level, &name) {
                return Err(Refusal {
                    name: String::from_utf8_lossy(&name).into_owned(),
                    why: USED,
                });
            }
            // A relation (or alias) used as a value: the whole row.
            let value = !matches!(level.clause, Clause::None | Clause::From | Clause::Into)
                && level.paren != Paren::Columns;
            if value && self.names.contains(&name) {
                return Err(Refusal {
                    name: String::from_utf8_lossy(&name).into_owned(),
                    why: WHOLE_ROW,
                });
            }
        }
        Ok(())
    }

    /// A plain item of the query's own result list: `x`, `t.x`, `*`, `t.*`,
    /// alone between `SELECT`/`,` and `,`/`FROM`/the end (an alias may only
    /// repeat the name).
    fn plain_result(&self, i: usize, depth: usize, level: Level, name: Option<&[u8]>) -> bool {
        let result_list = depth == 0
            && ((level.clause == Clause::Select && self.top_result)
                || level.clause == Clause::Returning);
        if !result_list {
            return false;
        }
        let start = self.chain_start(i);
        let before = start.checked_sub(1).is_some_and(|p| {
            self.punct(p, b',')
                || ["select", "distinct", "all", "returning"]
                    .iter()
                    .any(|kw| self.is(p, kw))
        });
        let mut next = i + 1;
        if let Some(name) = name {
            let alias_at = if self.is(next, "as") { next + 1 } else { next };
            let same = self
                .ident(alias_at)
                .and_then(Result::ok)
                .is_some_and(|a| a == name);
            if same {
                next = alias_at + 1;
            }
        }
        let after = next >= self.toks.len() || self.punct(next, b',') || self.is(next, "from");
        before && after
    }

    fn column_allowed(&self, i: usize, depth: usize, level: Level, name: &[u8]) -> bool {
        if self.plain_result(i, depth, level, Some(name)) {
            return true;
        }
        let start = self.chain_start(i);
        // Written, not read.
        if level.paren == Paren::Columns
            && start == i
            && (self.punct(i - 1, b'(') || self.punct(i - 1, b','))
            && (self.punct(i + 1, b',') || self.punct(i + 1, b')'))
        {
            return true;
        }
        if level.clause == Clause::Set
            && start == i
            && (self.is(i - 1, "set") || self.punct(i - 1, b','))
            && self.punct(i + 1, b'=')
        {
            return true;
        }
        // `EXCLUDED.ssn` is the row the client sent in this INSERT.
        self.main == Main::Insert && start + 2 == i && self.is(start, "excluded")
    }

    fn star(&self, i: usize, depth: usize, level: Level) -> Result<(), Refusal> {
        let qualified = i >= 2 && self.punct(i - 1, b'.');
        let in_list = qualified
            || i.checked_sub(1).is_some_and(|p| {
                self.punct(p, b',')
                    || ["select", "distinct", "all", "returning"]
                        .iter()
                        .any(|kw| self.is(p, kw))
            });
        if !in_list || self.plain_result(i, depth, level, None) {
            return Ok(());
        }
        if let Some(q) = qualified.then(|| self.ident(i - 2)).flatten() {
            let q = q?;
            if self.names.contains(&q) || self.p.relations.is_none() {
                return Err(Refusal {
                    name: String::from_utf8_lossy(&q).into_owned(),
                    why: WHOLE_ROW,
                });
            }
            return Ok(());
        }
        // `*` or `(expr).*` over the relations of the statement.
        if self.any_protected_relation || (qualified && self.p.relations.is_none()) {
            let name = self
                .names
                .first()
                .map(|n| String::from_utf8_lossy(n).into_owned());
            return Err(Refusal {
                name: name.unwrap_or_default(),
                why: STAR,
            });
        }
        Ok(())
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
            "CREATE INDEX ON customers (ssn)",
            "SELECT * FROM (TABLE customers) t",
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
    fn nothing_protected_checks_nothing() {
        assert!(check(b"SELECT reverse(ssn) FROM customers", &Protected::default()).is_ok());
    }
}
