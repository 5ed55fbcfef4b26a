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

mod dml;
mod query;
mod sources;
mod statement;
mod tokens;

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
