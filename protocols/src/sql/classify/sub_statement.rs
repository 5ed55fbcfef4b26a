//! One (sub)statement by its leading keyword: its kind, whether it is bounded,
//! and what it nests (CTEs, `EXPLAIN`, `PREPARE`, `MERGE` actions, `CREATE ... AS`),
//! and the statements code in string constants would run (`DO` blocks,
//! function bodies, `EXECUTE 'literal'`), which recurse into it.

use crate::sql::lexer::{lex, Dialect, Options, Token, TokenKind};

use super::functions::function_at;
use super::settings::set_statement;
use super::{eq, is, merge, opaque_other, word, Flags, Kind, Statement};

/// The tokens of the (sub)statement starting at `i`: up to the `)` that closes
/// the group it starts in, or the end.
fn scope(toks: &[Token], i: usize) -> &[Token] {
    let mut depth = 0i32;
    for (j, t) in toks.iter().enumerate().skip(i) {
        match t.kind {
            TokenKind::Punct(b'(') => depth += 1,
            TokenKind::Punct(b')') => {
                depth -= 1;
                if depth < 0 {
                    return &toks[i..j];
                }
            }
            _ => {}
        }
    }
    &toks[i..]
}

/// Is there a `WHERE` at the scope's own nesting level?
fn has_where(sql: &[u8], scope: &[Token]) -> bool {
    let mut depth = 0;
    for t in scope {
        match t.kind {
            TokenKind::Punct(b'(') => depth += 1,
            TokenKind::Punct(b')') => depth -= 1,
            _ if depth == 0 && is(sql, t, "WHERE") => return true,
            _ => {}
        }
    }
    false
}

fn any_word(sql: &[u8], scope: &[Token], kw: &str) -> bool {
    scope.iter().any(|t| is(sql, t, kw))
}

/// Classifies the statement whose first word is `toks[i]`; `None` if that word
/// does not start a statement (e.g. a column list after `(`).
pub(super) fn sub_statement(
    sql: &[u8],
    toks: &[Token],
    i: usize,
    dialect: Dialect,
    top: bool,
) -> Option<Statement> {
    // `PREPARE a AS PREPARE b AS ...`, `DECLARE c CURSOR FOR DECLARE ...`,
    // `EXPLAIN ANALYZE EXPLAIN ...` recurse: past a few levels, opaque.
    const MAX_CHAIN: u8 = 16;
    let depth = CHAIN_DEPTH.with(|d| d.get());
    if depth >= MAX_CHAIN {
        return Some(opaque_other());
    }
    CHAIN_DEPTH.with(|d| d.set(depth + 1));
    let st = sub_statement_in(sql, toks, i, dialect, top);
    CHAIN_DEPTH.with(|d| d.set(depth));
    st
}

thread_local! {
    /// How deep `sub_statement` is nested right now.
    static CHAIN_DEPTH: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

fn sub_statement_in(
    sql: &[u8],
    toks: &[Token],
    i: usize,
    dialect: Dialect,
    top: bool,
) -> Option<Statement> {
    let first = word(sql, toks.get(i))?;
    let up = |kw: &str| first.eq_ignore_ascii_case(kw.as_bytes());
    // Inside parentheses only queries and DML start statements; anything else
    // (a column list, a function argument) is not worth scoping.
    let nested_start = [
        "SELECT", "VALUES", "TABLE", "WITH", "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE",
    ];
    if !top && !nested_start.iter().any(|k| up(k)) {
        return None;
    }
    let s = scope(toks, i);
    let second = word(sql, s.get(1));
    let mut flags = Flags::default();
    let kind = if up("SELECT") || up("VALUES") || up("TABLE") {
        // SELECT ... INTO new_table creates a table (PostgreSQL; in MySQL it fills
        // variables or files, which is a write too).
        if any_word(sql, s, "INTO") && up("SELECT") {
            flags.writes = true;
            if dialect == Dialect::Mysql {
                flags.opaque = any_word(sql, s, "OUTFILE") || any_word(sql, s, "DUMPFILE");
                Kind::Select
            } else {
                Kind::Create
            }
        } else {
            Kind::Select
        }
    } else if up("WITH") {
        // The CTE bodies are found as sub-statements after `(`; the main query
        // decides the rest. Find the main statement's keyword at depth 0.
        let mut depth = 0;
        let mut kind = Kind::Select;
        for (j, t) in s.iter().enumerate().skip(1) {
            match t.kind {
                TokenKind::Punct(b'(') => depth += 1,
                TokenKind::Punct(b')') => depth -= 1,
                TokenKind::Word if depth == 0 => {
                    let w = &sql[t.range()];
                    for (kw, k) in [
                        ("INSERT", Kind::Insert),
                        ("UPDATE", Kind::Update),
                        ("DELETE", Kind::Delete),
                        ("MERGE", Kind::Merge),
                    ] {
                        if w.eq_ignore_ascii_case(kw.as_bytes()) && !is_after_for(sql, s, j) {
                            kind = k;
                            if k == Kind::Merge {
                                // Its actions are its own (bounded by ON).
                                let (action, kinds) = merge_actions(sql, &s[j..]);
                                flags.kinds |= kinds;
                                flags.writes = true;
                                return Some(Statement {
                                    kind: action,
                                    flags,
                                });
                            }
                            flags.writes = true;
                            if matches!(k, Kind::Update | Kind::Delete) && !has_where(sql, &s[j..])
                            {
                                flags.unbounded = true;
                            }
                        }
                    }
                    if w.eq_ignore_ascii_case(b"INTO")
                        && s.iter().take(j).any(|t| is(sql, t, "SELECT"))
                    {
                        flags.writes = true;
                        kind = Kind::Create;
                    }
                }
                _ => {}
            }
        }
        kind
    } else if up("INSERT") || up("REPLACE") && dialect == Dialect::Mysql {
        flags.writes = true;
        Kind::Insert
    } else if up("UPDATE") {
        flags.writes = true;
        flags.unbounded = !has_where(sql, s);
        Kind::Update
    } else if up("DELETE") {
        flags.writes = true;
        flags.unbounded = !has_where(sql, s);
        Kind::Delete
    } else if up("MERGE") {
        flags.writes = true;
        let (kind, kinds) = merge_actions(sql, s);
        flags.kinds |= kinds;
        kind
    } else if !top {
        // Inside parentheses only queries and DML start statements.
        return None;
    } else if up("COPY") {
        let from = any_word(sql, s, "FROM");
        flags.writes = from;
        let program = s
            .windows(2)
            .any(|w| (is(sql, &w[0], "TO") || is(sql, &w[0], "FROM")) && is(sql, &w[1], "PROGRAM"));
        // `COPY t FROM '/path'`: a file on the database server.
        let server_file = s.windows(2).any(|w| {
            (is(sql, &w[0], "TO") || is(sql, &w[0], "FROM")) && w[1].kind == TokenKind::String
        });
        if program {
            // An operating-system command on the database server.
            flags.opaque = true;
            flags.writes = true;
            Kind::Program
        } else {
            flags.opaque |= server_file;
            Kind::Copy
        }
    } else if up("CREATE") {
        flags.writes = true;
        // The object created: the first word after CREATE that is not one of
        // its modifiers (`OR REPLACE`, `CONSTRAINT TRIGGER`, `EVENT TRIGGER`,
        // `TRUSTED LANGUAGE`, `TEMP TABLE`, ...).
        const MODIFIERS: &[&str] = &[
            "OR",
            "REPLACE",
            "TEMP",
            "TEMPORARY",
            "UNLOGGED",
            "CONSTRAINT",
            "EVENT",
            "DEFAULT",
            "GLOBAL",
            "LOCAL",
            "TRUSTED",
            "PROCEDURAL",
            "UNIQUE",
            "RECURSIVE",
            "MATERIALIZED",
        ];
        let object = s
            .iter()
            .skip(1)
            .find(|t| !MODIFIERS.iter().any(|m| is(sql, t, m)));
        const CODE: &[&str] = &[
            "FUNCTION",
            "PROCEDURE",
            "TRIGGER",
            "RULE",
            "OPERATOR",
            "CAST",
            "LANGUAGE",
            "TRANSFORM",
            "AGGREGATE",
        ];
        // `CREATE SCHEMA s CREATE TRIGGER ...` creates code in its elements;
        // `CREATE EXTENSION` runs the extension's install script.
        let schema_code = object.is_some_and(|t| is(sql, t, "SCHEMA"))
            && CODE.iter().any(|c| any_word(sql, s, c));
        let extension = object.is_some_and(|t| is(sql, t, "EXTENSION"));
        if object.is_some_and(|t| CODE.iter().any(|c| is(sql, t, c))) || schema_code || extension {
            // Code that will run later, out of the gateway's sight (a call,
            // a trigger, a rewrite, an operator or cast that calls a function):
            // creating it counts as opaque, so a rule that holds or denies
            // opaque code holds its creation too.
            flags.opaque = true;
        }
        // `CREATE TABLE t AS EXECUTE p` runs a prepared statement out of sight;
        // a foreign table, server or user mapping reads data through option
        // strings (another table, another database).
        if any_word(sql, s, "EXECUTE")
            || any_word(sql, s, "FOREIGN")
            || object.is_some_and(|t| is(sql, t, "SERVER"))
            || any_word(sql, s, "MAPPING")
        {
            flags.opaque = true;
        }
        let routine = object.is_some_and(|t| is(sql, t, "FUNCTION") || is(sql, t, "PROCEDURE"));
        if routine && dialect == Dialect::Postgres {
            // What its body would do when called counts too.
            let mut st = Statement {
                kind: Kind::Create,
                flags,
            };
            let bodies = s
                .windows(2)
                .filter(|w| is(sql, &w[0], "AS") && w[1].kind == TokenKind::String)
                .map(|w| w[1]);
            for body in bodies {
                merge(&mut st, code_body(sql, &body), false);
            }
            return Some(st);
        }
        Kind::Create
    } else if up("ALTER") {
        flags.writes = true;
        if eq(second, "SYSTEM")
            || eq(second, "FOREIGN")
            || eq(second, "SERVER")
            || any_word(sql, s, "MAPPING")
        {
            flags.opaque = true;
        }
        // `ALTER ROLE|USER|DATABASE|FUNCTION ... SET name = value` sets a default
        // for later sessions (or calls): judged as that setting too.
        let defaults = [
            "ROLE",
            "USER",
            "DATABASE",
            "FUNCTION",
            "PROCEDURE",
            "ROUTINE",
        ];
        if dialect == Dialect::Postgres && defaults.iter().any(|k| eq(second, k)) {
            // Every `SET` word counts (`set` is also a legal argument name).
            for j in (0..s.len()).filter(|&j| is(sql, &s[j], "SET")) {
                let set = set_statement(sql, &s[j..], false);
                flags.kinds |= set.flags.kinds | set.kind.bit();
                flags.encoding = flags.encoding.max(set.flags.encoding);
                flags.opaque |= set.flags.opaque;
            }
        }
        Kind::Alter
    } else if up("DROP") {
        flags.writes = true;
        Kind::Drop
    } else if up("TRUNCATE") {
        flags.writes = true;
        Kind::Truncate
    } else if up("GRANT") {
        flags.writes = true;
        Kind::Grant
    } else if up("REVOKE") {
        flags.writes = true;
        Kind::Revoke
    } else if (up("SET") || up("RESET")) && dialect == Dialect::Postgres {
        return Some(set_statement(sql, s, up("RESET")));
    } else if up("SET") || up("RESET") {
        if up("SET") && eq(second, "TRANSACTION") {
            return Some(Statement {
                kind: Kind::Set,
                flags,
            });
        }
        if eq(second, "PASSWORD") || eq(second, "GLOBAL") {
            flags.writes = true;
        }
        Kind::Set
    } else if up("SHOW") {
        Kind::Show
    } else if up("BEGIN") || up("START") || up("SAVEPOINT") {
        Kind::Begin
    } else if up("COMMIT") || up("END") || up("RELEASE") {
        Kind::Commit
    } else if up("ROLLBACK") || up("ABORT") {
        Kind::Rollback
    } else if up("PREPARE") {
        if eq(second, "TRANSACTION") {
            return Some(Statement {
                kind: Kind::Commit,
                flags,
            });
        }
        // PREPARE name [(types)] AS statement: the statement is classified too.
        let as_at = s.iter().position(|t| is(sql, t, "AS"));
        if let Some(j) = as_at {
            if let Some(inner) = sub_statement(sql, s, j + 1, dialect, true) {
                let mut st = Statement {
                    kind: Kind::Prepare,
                    flags,
                };
                merge(&mut st, inner, false);
                st.flags.prepares = true;
                return Some(st);
            }
        }
        if dialect == Dialect::Mysql {
            // PREPARE s FROM @var: the text is not visible.
            flags.opaque = true;
        }
        Kind::Prepare
    } else if up("EXECUTE") || up("EXEC") {
        flags.opaque = true;
        flags.writes = true;
        Kind::Execute
    } else if up("DEALLOCATE") {
        Kind::Deallocate
    } else if up("DO") {
        flags.opaque = true;
        flags.writes = true;
        let mut st = Statement {
            kind: Kind::Do,
            flags,
        };
        if let (Some(body), Dialect::Postgres) =
            (s.iter().find(|t| t.kind == TokenKind::String), dialect)
        {
            merge(&mut st, code_body(sql, body), false);
        }
        return Some(st);
    } else if up("CALL") {
        flags.opaque = true;
        flags.writes = true;
        Kind::Call
    } else if up("EXPLAIN") || up("DESCRIBE") && dialect == Dialect::Mysql {
        // Only EXPLAIN ANALYZE runs the statement.
        // A quoted option name (`("analyze")`, `U&"..."`) may be ANALYZE too:
        // any quoted option counts as running the statement (fail closed).
        let analyze = s
            .iter()
            .take_while(|t| !is_statement_word(sql, t))
            .any(|t| {
                is(sql, t, "ANALYZE") || is(sql, t, "ANALYSE") || t.kind == TokenKind::QuotedIdent
            });
        let st = Statement {
            kind: Kind::Explain,
            flags,
        };
        if analyze {
            if let Some(j) = s.iter().position(|t| is_statement_word(sql, t)) {
                if let Some(inner) = sub_statement(sql, s, j, dialect, true) {
                    let mut st = st;
                    merge(&mut st, inner, false);
                    return Some(st);
                }
            }
        }
        return Some(st);
    } else if up("VACUUM")
        || up("ANALYZE")
        || up("ANALYSE")
        || up("CLUSTER")
        || up("REINDEX")
        || up("CHECKPOINT")
        || up("OPTIMIZE")
    {
        flags.writes = true;
        Kind::Vacuum
    } else if up("LOCK") {
        Kind::Lock
    } else if up("LISTEN") || up("UNLISTEN") {
        Kind::Listen
    } else if up("NOTIFY") {
        Kind::Notify
    } else if up("DECLARE") {
        // DECLARE c CURSOR FOR query: the query decides.
        let for_at = s.iter().position(|t| is(sql, t, "FOR"));
        if let Some(inner) = for_at.and_then(|j| sub_statement(sql, s, j + 1, dialect, true)) {
            return Some(inner);
        }
        flags.opaque = true;
        Kind::Other
    } else if up("FETCH")
        || up("MOVE")
        || up("CLOSE")
        || up("DISCARD")
        || up("COMMENT")
        || up("SECURITY")
    {
        if !(up("FETCH") || up("MOVE") || up("CLOSE")) {
            flags.writes = true;
        }
        Kind::Other
    } else if up("REFRESH") || up("IMPORT") || up("REASSIGN") {
        flags.writes = true;
        // IMPORT FOREIGN SCHEMA: foreign tables, see CREATE.
        flags.opaque |= up("IMPORT");
        Kind::Alter
    } else if up("USE") && dialect == Dialect::Mysql {
        Kind::SetSearchPath
    } else if up("LOAD") || up("HANDLER") {
        flags.opaque = true;
        flags.writes = true;
        Kind::Other
    } else {
        // Unknown: fail closed.
        flags.opaque = true;
        flags.writes = true;
        Kind::Other
    };
    Some(Statement { kind, flags })
}

/// A `MERGE` is judged as `merge` and as the kinds of its actions (`WHEN ...
/// THEN UPDATE`, `DELETE`, `INSERT`); its kind is the most dangerous action
/// (`merge` when it only does nothing). The actions are bounded by the `ON`
/// join, like a `WHERE`.
fn merge_actions(sql: &[u8], s: &[Token]) -> (Kind, u64) {
    let mut kind = Kind::Merge;
    // Rules on `merge` keep applying to every MERGE.
    let mut kinds = Kind::Merge.bit();
    let mut depth = 0;
    for (j, t) in s.iter().enumerate() {
        match t.kind {
            TokenKind::Punct(b'(') => depth += 1,
            TokenKind::Punct(b')') => depth -= 1,
            _ if depth == 0 && j > 0 && is(sql, &s[j - 1], "THEN") => {
                for (kw, k) in [
                    ("INSERT", Kind::Insert),
                    ("UPDATE", Kind::Update),
                    ("DELETE", Kind::Delete),
                ] {
                    if is(sql, t, kw) {
                        kinds |= k.bit();
                        if kind == Kind::Merge || k.danger() > kind.danger() {
                            kind = k;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (kind, kinds)
}

/// `SELECT ... FOR UPDATE` / `FOR NO KEY UPDATE` names UPDATE without being one;
/// only those exact sequences count (a column named `key` must not hide a DML).
fn is_after_for(sql: &[u8], s: &[Token], j: usize) -> bool {
    let w = |k: usize, kw: &str| j >= k && is(sql, &s[j - k], kw);
    w(1, "FOR") || (w(1, "KEY") && w(2, "NO") && w(3, "FOR"))
}

fn is_statement_word(sql: &[u8], t: &Token) -> bool {
    const WORDS: &[&str] = &[
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "VALUES", "TABLE", "EXECUTE",
        "CREATE", "DECLARE",
    ];
    WORDS.iter().any(|w| is(sql, t, w))
}

// Code in string constants (`DO` blocks, function bodies, `EXECUTE 'literal'`):
// the statements it would run. It recurses into `sub_statement`, so it lives
// beside it.

thread_local! {
    /// How deep code bodies nest right now (`DO` in `EXECUTE '...'` in a body).
    static CODE_DEPTH: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// What the code in a string constant (a `DO` block, a function's body) would
/// run: every statement found in it, wherever it starts (a PL/pgSQL body is
/// statements between `BEGIN`, `THEN`, `LOOP`, ... and `;`), and the text of
/// `EXECUTE 'literal'`. `EXECUTE` of anything computed, a body in a string
/// form Sluice does not decode, or nesting deeper than a few levels is opaque.
/// Over-reading errs towards the more dangerous kinds: a column named
/// `delete` inside a body reads as a DELETE.
pub(super) fn code_body(sql: &[u8], body: &Token) -> Statement {
    let opaque = Statement {
        kind: Kind::Other,
        flags: Flags {
            opaque: true,
            writes: true,
            ..Flags::default()
        },
    };
    let Some(text) = string_value(&sql[body.range()]) else {
        return opaque;
    };
    let depth = CODE_DEPTH.with(|d| d.get());
    if depth >= 4 {
        return opaque;
    }
    CODE_DEPTH.with(|d| d.set(depth + 1));
    let st = code(&text);
    CODE_DEPTH.with(|d| d.set(depth));
    st.unwrap_or(opaque)
}

/// Words that start a statement wherever they stand in a body.
const BODY_STATEMENTS: &[&str] = &[
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "CREATE", "ALTER", "DROP", "TRUNCATE",
    "GRANT", "REVOKE", "COPY", "CALL", "DO", "SET", "RESET", "REFRESH", "LOCK", "VACUUM",
    "COMMENT", "SECURITY", "IMPORT", "REASSIGN", "LOAD", "NOTIFY", "LISTEN", "PREPARE", "DECLARE",
    "CLUSTER", "REINDEX", "DISCARD",
];

/// PL/pgSQL words that end the SQL statement before them (`FOR r IN DELETE
/// ... LOOP`, `IF ... THEN UPDATE ...`).
const BODY_CUTS: &[&str] = &[
    "LOOP",
    "THEN",
    "ELSE",
    "ELSIF",
    "END",
    "BEGIN",
    "EXCEPTION",
    "PERFORM",
    "RETURN",
    "RAISE",
    "IF",
    "EXECUTE",
    "WHILE",
    "FOREACH",
    "EXIT",
    "CONTINUE",
    "GET",
    "OPEN",
    "FETCH",
    "CLOSE",
    "ASSERT",
];

fn code(text: &[u8]) -> Option<Statement> {
    let mut toks = Vec::new();
    lex(text, Options::new(Dialect::Postgres), &mut toks).ok()?;
    let mut st = Statement {
        kind: Kind::Other,
        flags: Flags::default(),
    };
    // A statement starts at the body's start, after `;`, after a PL/pgSQL
    // word (`THEN`, `LOOP`, `IN`, ...) or after `(` (a CTE's or subquery's
    // DML), and is read up to the next `;` or PL/pgSQL word, or its `)`. A
    // statement that loses its `WHERE` to a cut reads as unbounded: the safe
    // side. Each token is read a bounded number of times (nesting deeper than
    // a few levels is opaque).
    const MAX_DEPTH: usize = 8;
    let starts = |t: &Token| BODY_STATEMENTS.iter().any(|k| is(text, t, k));
    let plpgsql = |t: &Token| BODY_CUTS.iter().any(|k| is(text, t, k));
    let mut ends = vec![toks.len(); toks.len()];
    let mut next = toks.len();
    for j in (0..toks.len()).rev() {
        ends[j] = next;
        if toks[j].kind == TokenKind::Semicolon || plpgsql(&toks[j]) {
            next = j;
        }
    }
    // A statement after `(` ends at its `)`.
    let mut open: Vec<usize> = Vec::new();
    let mut deep = vec![false; toks.len()];
    for j in 0..toks.len() {
        deep[j] = open.len() > MAX_DEPTH;
        match toks[j].kind {
            TokenKind::Punct(b'(') => {
                open.push(j);
                if open.len() > MAX_DEPTH {
                    st.flags.opaque = true;
                    st.flags.writes = true;
                }
            }
            TokenKind::Punct(b')') => {
                if let Some(o) = open.pop() {
                    if o + 1 < toks.len() {
                        ends[o + 1] = ends[o + 1].min(j);
                    }
                }
            }
            _ => {}
        }
    }
    let at_start = |j: usize| {
        j == 0 || {
            let p = &toks[j - 1];
            p.kind == TokenKind::Semicolon
                || p.kind == TokenKind::Punct(b'(')
                || plpgsql(p)
                || ["IN", "QUERY", "AS"].iter().any(|k| is(text, p, k))
        }
    };
    for (j, t) in toks.iter().enumerate() {
        function_at(text, &toks, j, Dialect::Postgres, &mut st);
        let end = ends[j];
        if is(text, t, "EXECUTE") {
            match toks.get(j + 1) {
                // `EXECUTE 'text'`, perhaps `|| 'more'`: only a lone literal is known.
                Some(lit)
                    if lit.kind == TokenKind::String
                        && (j + 2 == end
                            || is(text, &toks[j + 2], "INTO")
                            || is(text, &toks[j + 2], "USING")) =>
                {
                    merge(&mut st, code_body(text, lit), false);
                }
                _ => {
                    st.flags.opaque = true;
                    st.flags.writes = true;
                }
            }
            continue;
        }
        if starts(t) && at_start(j) && !deep[j] {
            if let Some(inner) = sub_statement(text, &toks[j..end], 0, Dialect::Postgres, true) {
                merge(&mut st, inner, false);
            }
        }
    }
    Some(st)
}

/// The text of a string constant as the server reads it: `'...'` (quotes
/// doubled) or `$tag$...$tag$`; `None` for forms with escapes (`E'...'`,
/// `U&'...'`) or a standard-conforming-strings-dependent backslash.
fn string_value(raw: &[u8]) -> Option<Vec<u8>> {
    match raw.first()? {
        b'\'' if !raw.contains(&b'\\') => {
            let inner = raw.get(1..raw.len().checked_sub(1)?)?;
            let mut out = Vec::with_capacity(inner.len());
            let mut i = 0;
            while i < inner.len() {
                out.push(inner[i]);
                i += if inner[i] == b'\'' { 2 } else { 1 };
            }
            Some(out)
        }
        b'$' => {
            let tag_end = raw[1..].iter().position(|&b| b == b'$')? + 2;
            let inner = raw.get(tag_end..raw.len().checked_sub(tag_end)?)?;
            Some(inner.to_vec())
        }
        _ => None,
    }
}
