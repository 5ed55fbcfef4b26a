//! Statement classification over the lexer's tokens.
//!
//! Each statement gets a [`Kind`] and [`Flags`]. A statement counts as the most
//! dangerous kind found anywhere inside it: `WITH x AS (DELETE ...) SELECT` is a
//! delete, `EXPLAIN ANALYZE UPDATE ...` is an update, `PREPARE p AS DROP ...`
//! (were it valid) a drop. What cannot be seen through (`DO`, `EXECUTE`, `CALL`,
//! `COPY ... PROGRAM`, functions known to run dynamic SQL or write, an unknown
//! leading keyword, anything the lexer cannot finish) is flagged `opaque`, so
//! policy can fail closed.

use super::lexer::{lex, Dialect, LexError, Options, Token, TokenKind};
use crate::postgres::encoding::{self, Class};

/// Statement kinds, in the order of `sluice_config::STATEMENT_KINDS` (a test in
/// `core` keeps the two lists equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Copy,
    /// `COPY ... TO PROGRAM` / `FROM PROGRAM`: runs an operating-system command.
    Program,
    Create,
    Alter,
    Drop,
    Truncate,
    Grant,
    Revoke,
    Set,
    /// `SET ROLE`, `SET SESSION AUTHORIZATION`, `set_config('role', ...)`.
    SetRole,
    /// `SET search_path`, `SET SCHEMA`, `set_config('search_path', ...)`.
    SetSearchPath,
    Show,
    Begin,
    Commit,
    Rollback,
    Prepare,
    Execute,
    Deallocate,
    Do,
    Call,
    Explain,
    Vacuum,
    Lock,
    Listen,
    Notify,
    Other,
}

impl Kind {
    pub const ALL: [Kind; 31] = [
        Kind::Select,
        Kind::Insert,
        Kind::Update,
        Kind::Delete,
        Kind::Merge,
        Kind::Copy,
        Kind::Program,
        Kind::Create,
        Kind::Alter,
        Kind::Drop,
        Kind::Truncate,
        Kind::Grant,
        Kind::Revoke,
        Kind::Set,
        Kind::SetRole,
        Kind::SetSearchPath,
        Kind::Show,
        Kind::Begin,
        Kind::Commit,
        Kind::Rollback,
        Kind::Prepare,
        Kind::Execute,
        Kind::Deallocate,
        Kind::Do,
        Kind::Call,
        Kind::Explain,
        Kind::Vacuum,
        Kind::Lock,
        Kind::Listen,
        Kind::Notify,
        Kind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Select => "select",
            Kind::Insert => "insert",
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::Merge => "merge",
            Kind::Copy => "copy",
            Kind::Program => "program",
            Kind::Create => "create",
            Kind::Alter => "alter",
            Kind::Drop => "drop",
            Kind::Truncate => "truncate",
            Kind::Grant => "grant",
            Kind::Revoke => "revoke",
            Kind::Set => "set",
            Kind::SetRole => "set_role",
            Kind::SetSearchPath => "set_search_path",
            Kind::Show => "show",
            Kind::Begin => "begin",
            Kind::Commit => "commit",
            Kind::Rollback => "rollback",
            Kind::Prepare => "prepare",
            Kind::Execute => "execute",
            Kind::Deallocate => "deallocate",
            Kind::Do => "do",
            Kind::Call => "call",
            Kind::Explain => "explain",
            Kind::Vacuum => "vacuum",
            Kind::Lock => "lock",
            Kind::Listen => "listen",
            Kind::Notify => "notify",
            Kind::Other => "other",
        }
    }

    /// How much harm a statement of this kind can do; the highest found wins.
    pub fn danger(self) -> u8 {
        match self {
            Kind::Select | Kind::Show | Kind::Explain => 0,
            Kind::Listen | Kind::Notify => 1,
            Kind::Begin | Kind::Commit | Kind::Rollback | Kind::Deallocate => 2,
            Kind::Set | Kind::SetSearchPath | Kind::Prepare => 3,
            Kind::Other => 4,
            Kind::Insert | Kind::Copy | Kind::Lock | Kind::Vacuum => 5,
            Kind::Update | Kind::Merge => 6,
            Kind::Delete => 7,
            Kind::Create => 8,
            Kind::Alter | Kind::Grant | Kind::Revoke | Kind::SetRole => 9,
            Kind::Execute | Kind::Call | Kind::Do => 10,
            Kind::Truncate => 11,
            Kind::Drop => 12,
            Kind::Program => 13,
        }
    }

    /// This kind's bit in [`Flags::kinds`].
    pub const fn bit(self) -> u64 {
        1 << self as u8
    }
}

/// Properties of a statement beyond its kind. `kinds` and `encoding` say what
/// else it does wherever it does it (`SELECT set_config('role', ...)` also sets
/// the role), so policy judges that part too whatever the statement's own kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// An `UPDATE`/`DELETE` (anywhere in the statement) without a `WHERE`.
    pub unbounded: bool,
    /// Modifies data or schema somewhere.
    pub writes: bool,
    /// Contains code the gateway cannot see into.
    pub opaque: bool,
    /// Calls a function not known to be free of side effects (anything but
    /// the common read-only built-ins: `count`, `coalesce`, `lower`, ...): a
    /// user function may write, so the statement is not proven read-only.
    pub calls: bool,
    /// Every kind of (sub)statement found inside, as [`Kind::bit`]s: `WITH d AS
    /// (DELETE ...) INSERT ...` is an insert that also deletes, `MERGE ... THEN
    /// DELETE` a delete, `SELECT set_config('role', ...)` also sets the role
    /// (choosing a role or a search path counts; returning to the login's
    /// defaults does not). Policy judges the statement as each of them.
    pub kinds: u64,
    /// A setting's name or value comes from a `$n` parameter
    /// (`set_config('client_encoding', $1, false)`): the statement can only be
    /// judged with the values a `Bind` gives it.
    pub bound_setting: bool,
    /// Sets the client encoding to an encoding of this class; `Unsafe` also when
    /// the new encoding cannot be read from the text.
    pub encoding: Option<Class>,
    /// `PREPARE name AS statement`: the statement is kept to run later.
    pub prepares: bool,
}

/// One classified statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Statement {
    /// The most dangerous kind found anywhere in it.
    pub kind: Kind,
    pub flags: Flags,
}

impl Statement {
    /// Every kind the statement is judged as: its own and those inside.
    pub fn kinds(&self) -> impl Iterator<Item = Kind> {
        let bits = self.flags.kinds | self.kind.bit();
        Kind::ALL.into_iter().filter(move |k| bits & k.bit() != 0)
    }

    /// Does it do `kind` anywhere?
    pub fn has(&self, kind: Kind) -> bool {
        (self.flags.kinds | self.kind.bit()) & kind.bit() != 0
    }

    /// Proven to change nothing: a `SELECT` or `SHOW` (and nothing else
    /// inside), no write, no opaque code, no function that may write. What
    /// is not proven is treated as a write.
    pub fn read_only(&self) -> bool {
        let reads = Kind::Select.bit() | Kind::Show.bit();
        (self.flags.kinds | self.kind.bit()) & !reads == 0
            && !self.flags.writes
            && !self.flags.opaque
            && !self.flags.calls
    }
}

/// Functions that run SQL the gateway cannot see, write, or change session state.
const OPAQUE_FUNCTIONS: &[&str] = &[
    "dblink",
    "dblink_exec",
    "dblink_send_query",
    "dblink_open",
    "dblink_fetch",
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    // Run the SQL text they are given.
    "ts_stat",
    "ts_rewrite",
    "lo_import",
    "lo_export",
    "lo_unlink",
    "lo_put",
    "lo_from_bytea",
    "lo_create",
    "lo_creat",
    "pg_file_write",
    "pg_file_unlink",
    "pg_file_rename",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_logical_emit_message",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "setval",
    "nextval",
    "xpath_table",
    "sys_exec",
    "sys_eval",
    "load_file",
    "sleep",
    "benchmark",
];

/// Families of server functions that reach outside the statement: other
/// databases (`dblink*`), the server's files (`pg_read_*`, `pg_ls_*`,
/// `pg_file_*`, `pg_stat_file`, large-object import/export), replication and
/// WAL control.
const OPAQUE_PREFIXES: &[&str] = &[
    "dblink",
    "pg_read_",
    "pg_ls_",
    "pg_file_",
    "pg_stat_file",
    "lo_",
    "pg_create_",
    "pg_drop_replication_slot",
    "pg_replication_",
    "pg_logical_",
    "pg_copy_",
    "pg_import_system_collations",
    "pg_log_backend_memory_contexts",
    "pg_wal_replay_",
    // Read whole tables, schemas or databases named by a string.
    "table_to_xml",
    "schema_to_xml",
    "database_to_xml",
];

/// Reusable scratch space, so classifying allocates nothing once warm.
#[derive(Default)]
pub struct Classifier {
    tokens: Vec<Token>,
    alt: Vec<Token>,
}

impl Classifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Classifies every statement of `sql` into `out` (cleared first).
    /// Empty statements (only comments or `;`) produce nothing.
    pub fn classify(&mut self, sql: &[u8], dialect: Dialect, out: &mut Vec<Statement>) {
        out.clear();
        let opts = Options::new(dialect);
        if lex(sql, opts, &mut self.tokens).is_err() {
            out.push(opaque_other());
            return;
        }
        // PostgreSQL with standard_conforming_strings off reads backslashes in
        // plain strings as escapes. If that reading splits the text differently,
        // the gateway cannot know which the server uses: opaque.
        if dialect == Dialect::Postgres && memchr::memchr(b'\\', sql).is_some() {
            let alt = Options {
                backslash_quotes: true,
                ..opts
            };
            let same = match lex(sql, alt, &mut self.alt) {
                Ok(()) => self.alt == self.tokens,
                Err(_) => false,
            };
            if !same {
                out.push(opaque_other());
                return;
            }
        }
        // In the multibyte encodings Sluice refuses (SJIS, BIG5, GBK, ...), a
        // character's second byte can be `\`, right after a byte >= 0x80. Should
        // the session ever be in one of them unseen, that is the only way the
        // server could read the text differently: such text is opaque.
        let hidden_escape = dialect == Dialect::Postgres
            && memchr::memchr_iter(b'\\', sql).any(|i| i > 0 && sql[i - 1] >= 0x80);
        for stmt in self.tokens.split(|t| t.kind == TokenKind::Semicolon) {
            if !stmt.is_empty() {
                let mut st = statement(sql, stmt, dialect);
                st.flags.opaque |= hidden_escape;
                out.push(st);
            }
        }
    }
}

fn opaque_other() -> Statement {
    Statement {
        kind: Kind::Other,
        flags: Flags {
            opaque: true,
            writes: true,
            ..Flags::default()
        },
    }
}

/// Upper-cased keyword comparison without allocating.
fn is(sql: &[u8], t: &Token, kw: &str) -> bool {
    t.kind == TokenKind::Word && sql[t.range()].eq_ignore_ascii_case(kw.as_bytes())
}

fn word<'a>(sql: &'a [u8], t: Option<&Token>) -> Option<&'a [u8]> {
    t.filter(|t| t.kind == TokenKind::Word)
        .map(|t| &sql[t.range()])
}

fn eq(w: Option<&[u8]>, kw: &str) -> bool {
    w.is_some_and(|w| w.eq_ignore_ascii_case(kw.as_bytes()))
}

/// Classifies one statement (its tokens, without the `;`).
fn statement(sql: &[u8], toks: &[Token], dialect: Dialect) -> Statement {
    let mut st = Statement {
        kind: Kind::Other,
        flags: Flags::default(),
    };
    // Walk every position where a (sub)statement may start: the beginning, and
    // right after `(`. Nested DML is what makes a SELECT a write.
    let mut seen_any = false;
    // True while only `(` has been seen: `(SELECT 1)` starts at its first word.
    let mut leading = true;
    // Each sub-statement is read to its end: past this nesting depth the
    // reading would cost the square of the text, so deeper ones are opaque.
    const MAX_NESTING: usize = 32;
    let mut depth = 0usize;
    for i in 0..toks.len() {
        let kind = toks[i].kind;
        match kind {
            TokenKind::Punct(b'(') => depth += 1,
            TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
            _ => {}
        }
        let at_start =
            i == 0 || (toks[i - 1].kind == TokenKind::Punct(b'(') && kind == TokenKind::Word);
        if at_start && kind == TokenKind::Word && depth > MAX_NESTING {
            st.flags.opaque = true;
            st.flags.writes = true;
        } else if at_start && kind == TokenKind::Word {
            if let Some(sub) = sub_statement(sql, toks, i, dialect, leading) {
                merge(&mut st, sub, !seen_any && leading);
                seen_any = true;
            }
        }
        leading &= kind == TokenKind::Punct(b'(');
        function_at(sql, toks, i, dialect, &mut st);
    }
    if !seen_any {
        st.flags.opaque = true;
        st.flags.writes = true;
    }
    // `pg_settings` is writable by anyone, and its rule calls `set_config` with
    // whatever the statement puts there: a write to it may set anything.
    let writes_rows =
        Kind::Insert.bit() | Kind::Update.bit() | Kind::Delete.bit() | Kind::Merge.bit();
    if dialect == Dialect::Postgres
        && (st.flags.kinds | st.kind.bit()) & writes_rows != 0
        && toks.iter().any(|t| {
            let raw = &sql[t.range()];
            let name = raw
                .strip_prefix(b"\"")
                .and_then(|r| r.strip_suffix(b"\""))
                .unwrap_or(raw);
            // A `U&"..."` name may spell pg_settings through escapes.
            let escaped =
                t.kind == TokenKind::QuotedIdent && matches!(raw.first(), Some(b'u' | b'U'));
            matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent)
                && (name.eq_ignore_ascii_case(b"pg_settings") || escaped)
        })
    {
        merge(&mut st, unknown_setting(), false);
    }
    st
}

/// Functions known to hide code or write, called at `toks[i]`: `name (`,
/// schema-qualified too.
fn function_at(sql: &[u8], toks: &[Token], i: usize, dialect: Dialect, st: &mut Statement) {
    let kind = toks[i].kind;
    if matches!(kind, TokenKind::Word | TokenKind::QuotedIdent)
        && toks
            .get(i + 1)
            .is_some_and(|t| t.kind == TokenKind::Punct(b'('))
    {
        let raw = &sql[toks[i].range()];
        // `U&"..."` names may spell anything through escapes, `set_config`
        // too: opaque, and a setting that could be any.
        if kind == TokenKind::QuotedIdent && raw.first().is_some_and(|b| matches!(b, b'u' | b'U')) {
            st.flags.opaque = true;
            st.flags.writes = true;
            if dialect == Dialect::Postgres {
                merge(st, unknown_setting(), false);
            }
            return;
        }
        let name = if kind == TokenKind::QuotedIdent {
            &raw[raw.iter().position(|&b| b == b'"').map_or(0, |p| p + 1)..raw.len() - 1]
        } else {
            raw
        };
        let starts =
            |p: &str| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p.as_bytes());
        if OPAQUE_FUNCTIONS
            .iter()
            .any(|f| f.len() == name.len() && name.eq_ignore_ascii_case(f.as_bytes()))
            || (dialect == Dialect::Postgres && OPAQUE_PREFIXES.iter().any(|p| starts(p)))
        {
            st.flags.opaque = true;
            st.flags.writes = true;
        }
        if name.eq_ignore_ascii_case(b"set_config") && dialect == Dialect::Postgres {
            merge(st, set_config(sql, &toks[i + 2..]), false);
        }
        let known = |list: &[&str]| {
            list.iter()
                .any(|f| f.len() == name.len() && name.eq_ignore_ascii_case(f.as_bytes()))
        };
        // `evil.lower(x)` is not the built-in: only `pg_catalog.` names are.
        let qualified = i >= 2
            && toks[i - 1].kind == TokenKind::Punct(b'.')
            && !sql[toks[i - 2].range()].eq_ignore_ascii_case(b"pg_catalog");
        if kind == TokenKind::QuotedIdent
            || qualified
            || !(known(NOT_CALLS) || known(READ_ONLY_FUNCTIONS))
        {
            st.flags.calls = true;
        }
    }
}

/// Words a `(` follows that are not function calls.
const NOT_CALLS: &[&str] = &[
    "in",
    "exists",
    "values",
    "as",
    "any",
    "all",
    "some",
    "cast",
    "row",
    "using",
    "on",
    "and",
    "or",
    "not",
    "select",
    "from",
    "where",
    "join",
    "lateral",
    "with",
    "then",
    "else",
    "when",
    "case",
    "is",
    "like",
    "ilike",
    "similar",
    "between",
    "limit",
    "offset",
    "fetch",
    "having",
    "union",
    "intersect",
    "except",
    "distinct",
    "array",
    "table",
    "only",
    "returning",
    "into",
    "interval",
    "timestamp",
    "time",
    "numeric",
    "decimal",
    "varchar",
    "char",
    "character",
    "bit",
    "float",
    "extract",
    "overlay",
    "position",
    "substring",
    "trim",
];

/// Built-in functions that read only (the common ones; anything else, a
/// user function above all, may write).
const READ_ONLY_FUNCTIONS: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "every",
    "bool_and",
    "bool_or",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "lower",
    "upper",
    "length",
    "char_length",
    "octet_length",
    "abs",
    "round",
    "floor",
    "ceil",
    "ceiling",
    "trunc",
    "mod",
    "power",
    "sqrt",
    "now",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "date_trunc",
    "date_part",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_number",
    "concat",
    "concat_ws",
    "replace",
    "split_part",
    "substr",
    "left",
    "right",
    "lpad",
    "rpad",
    "ltrim",
    "rtrim",
    "btrim",
    "md5",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    "generate_series",
    "unnest",
    "array_length",
    "cardinality",
    "jsonb_build_object",
    "json_build_object",
    "jsonb_build_array",
    "json_build_array",
    "to_json",
    "to_jsonb",
    "jsonb_array_elements",
    "json_array_elements",
    "jsonb_each",
    "json_each",
    "format",
    "version",
    "current_setting",
    "pg_backend_pid",
    "random",
    "age",
    "coalesce",
    "nullif",
    "greatest",
    "least",
];

/// Folds a sub-statement into the statement: the most dangerous kind wins, flags
/// accumulate. `top` marks the statement's own leading keyword.
fn merge(st: &mut Statement, sub: Statement, top: bool) {
    if top || sub.kind.danger() > st.kind.danger() {
        st.kind = sub.kind;
    }
    st.flags.unbounded |= sub.flags.unbounded;
    st.flags.writes |= sub.flags.writes;
    st.flags.opaque |= sub.flags.opaque;
    st.flags.calls |= sub.flags.calls;
    st.flags.kinds |= sub.flags.kinds | sub.kind.bit();
    st.flags.encoding = st.flags.encoding.max(sub.flags.encoding);
    st.flags.bound_setting |= sub.flags.bound_setting;
    st.flags.prepares |= sub.flags.prepares;
}

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
fn sub_statement(
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
fn code_body(sql: &[u8], body: &Token) -> Statement {
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

/// The first function of `functions` ((schema, name), lower-cased) that
/// `sql` calls: `name(`, `schema.name(`, `"Name"(`, and any `U&"..."(`.
/// `row.name` (attribute notation, which calls `name(row)`) counts too.
/// `("*", "*")` means the functions are unknown: then every call counts (fail
/// closed). A name after `FUNCTION`, `PROCEDURE`, `ROUTINE` or `AGGREGATE` is
/// named, not called (`DROP FUNCTION f(int)`).
pub fn calls(sql: &[u8], functions: &[(String, String)]) -> Option<String> {
    if functions.is_empty() || memchr::memchr2(b'(', b'.', sql).is_none() {
        return None;
    }
    let mut toks = Vec::new();
    if lex(sql, Options::new(Dialect::Postgres), &mut toks).is_err() {
        return None; // the classifier already made it opaque
    }
    let any = functions.iter().any(|(s, n)| s == "*" && n == "*");
    let name_of = |t: &Token| -> Option<Vec<u8>> {
        let raw = &sql[t.range()];
        match t.kind {
            TokenKind::Word => Some(raw.to_ascii_lowercase()),
            TokenKind::QuotedIdent if raw.first() == Some(&b'"') => {
                Some(raw[1..raw.len() - 1].to_ascii_lowercase())
            }
            // `U&"..."` may spell any name.
            TokenKind::QuotedIdent => Some(b"*".to_vec()),
            _ => None,
        }
    };
    for i in 0..toks.len() {
        let call = toks.get(i + 1).map(|t| t.kind) == Some(TokenKind::Punct(b'('));
        let qualified = i >= 2
            && toks[i - 1].kind == TokenKind::Punct(b'.')
            && matches!(toks[i - 2].kind, TokenKind::Word | TokenKind::QuotedIdent);
        // `f(...)`, `schema.f(...)`, and `row.f` (attribute notation calls
        // `f(row)`; a column of that name would win, so this errs safe).
        if !call && !qualified {
            continue;
        }
        let Some(name) = name_of(&toks[i]) else {
            continue;
        };
        let schema = if qualified && call {
            name_of(&toks[i - 2])
        } else {
            None
        };
        let start = if qualified { i - 2 } else { i };
        let named = start > 0
            && ["FUNCTION", "PROCEDURE", "ROUTINE", "AGGREGATE"]
                .iter()
                .any(|k| is(sql, &toks[start - 1], k));
        let syntax = !qualified
            && toks[i].kind == TokenKind::Word
            && KEYWORDS_BEFORE_PAREN.iter().any(|k| is(sql, &toks[i], k));
        if named || syntax {
            continue;
        }
        let hit = (any && call)
            || name == b"*"
            || functions.iter().any(|(s, n)| {
                n.as_bytes() == name.as_slice()
                    && schema
                        .as_deref()
                        .is_none_or(|q| q == s.as_bytes() || q == b"*")
            });
        if hit {
            let schema = schema.map(|q| format!("{}.", String::from_utf8_lossy(&q)));
            return Some(format!(
                "{}{}",
                schema.unwrap_or_default(),
                String::from_utf8_lossy(&name)
            ));
        }
    }
    None
}

/// Words followed by `(` that are syntax, not calls.
const KEYWORDS_BEFORE_PAREN: &[&str] = &[
    "IN",
    "EXISTS",
    "ANY",
    "ALL",
    "SOME",
    "VALUES",
    "ARRAY",
    "ROW",
    "ON",
    "USING",
    "AND",
    "OR",
    "NOT",
    "AS",
    "WHEN",
    "THEN",
    "ELSE",
    "WHERE",
    "SELECT",
    "FROM",
    "JOIN",
    "INTO",
    "CONFLICT",
    "OVER",
    "FILTER",
    "WITHIN",
    "SET",
    "RETURNING",
    "TABLE",
    "INSERT",
    "BY",
    "CAST",
    "COALESCE",
    "NULLIF",
    "GREATEST",
    "LEAST",
    "EXTRACT",
    "POSITION",
    "SUBSTRING",
    "OVERLAY",
    "TRIM",
    "GROUPING",
    "XMLELEMENT",
    "XMLFOREST",
    "XMLPARSE",
    "XMLPI",
    "XMLROOT",
    "XMLSERIALIZE",
];

/// The value a setting is given, as far as the text shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// `DEFAULT`, `RESET`: back to what the session started with.
    Default,
    /// A plain word, number or `'string'` (quotes removed, `''` still doubled).
    Text(&'a [u8]),
    /// A parameter, an expression, an escaped string: not known until run.
    Unknown,
}

/// How setting `name` (a GUC name, any case) to `value` is classified, wherever
/// it happens: `SET`, `set_config`, a startup parameter, startup `options`.
///
/// Choosing a role is [`Kind::SetRole`], choosing a search path
/// [`Kind::SetSearchPath`]; a reset to the default is a plain `set` (it returns to
/// what the gateway logged in with). A client encoding is classified by
/// [`encoding::class`], and an unknown one is unsafe.
pub fn setting(name: &[u8], value: Value<'_>) -> Statement {
    let mut st = Statement {
        kind: Kind::Set,
        flags: Flags::default(),
    };
    // `set_config('role', 'none', ...)` resets the role; PostgreSQL compares
    // exactly (`'NONE'` is a role of that name). A bare `NONE` word arrives
    // here lower-cased, as the server reads it.
    let text = |v: &[u8]| -> bool { v != b"none" };
    if name.eq_ignore_ascii_case(b"role") || name.eq_ignore_ascii_case(b"session_authorization") {
        if match value {
            Value::Default => false,
            Value::Text(v) => text(v) || name.eq_ignore_ascii_case(b"session_authorization"),
            Value::Unknown => true,
        } {
            st.kind = Kind::SetRole;
        }
    } else if name.eq_ignore_ascii_case(b"search_path") {
        if value != Value::Default {
            st.kind = Kind::SetSearchPath;
        }
    } else if name.len() >= 17 && name[name.len() - 17..].eq_ignore_ascii_case(b"preload_libraries")
    {
        // `local_preload_libraries` / `session_preload_libraries` load code
        // into the session, like `LOAD`.
        st.flags.opaque = true;
    } else if name.eq_ignore_ascii_case(b"client_encoding") {
        st.flags.encoding = match value {
            Value::Default => None,
            Value::Text(v) => Some(encoding::class(v)),
            Value::Unknown => Some(Class::Unsafe),
        };
    }
    st
}

/// A setting name the text does not show (`U&"..."`, a parameter): it may be
/// any of them, so it counts as all of them.
fn unknown_setting() -> Statement {
    Statement {
        kind: Kind::SetRole,
        flags: Flags {
            opaque: true,
            kinds: Kind::SetSearchPath.bit(),
            encoding: Some(Class::Unsafe),
            ..Flags::default()
        },
    }
}

/// `sql` with each `$n` parameter replaced by its value from a `Bind` as a
/// plain literal, so a statement whose meaning depends on its parameters
/// (`set_config('client_encoding', $1, false)`) can be classified with them.
/// A binary value is taken as its bytes: the arguments a setting takes are
/// text, whose binary form is the text itself, and a literal changes nothing
/// else about how a statement classifies. A value that cannot be written as a
/// plain literal (a backslash, a NUL, not UTF-8) and a parameter with no value
/// stay `$n`, so they classify as unknown (fail closed). `None` if the text
/// does not lex.
pub fn with_params(sql: &[u8], params: &[crate::postgres::frontend::Param<'_>]) -> Option<Vec<u8>> {
    use crate::postgres::frontend::Param;
    let mut tokens = Vec::new();
    lex(sql, Options::new(Dialect::Postgres), &mut tokens).ok()?;
    let mut out = Vec::with_capacity(sql.len() + 16);
    let mut from = 0;
    for t in tokens.iter().filter(|t| t.kind == TokenKind::Param) {
        let raw = &sql[t.range()];
        let index = std::str::from_utf8(raw.get(1..)?)
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n >= 1);
        let literal = match index.and_then(|n| params.get(n - 1)) {
            Some(Param::Null) => Some(b"NULL".to_vec()),
            Some(Param::Text(v) | Param::Binary(v))
                if std::str::from_utf8(v).is_ok() && !v.contains(&b'\\') && !v.contains(&0) =>
            {
                let mut l = Vec::with_capacity(v.len() + 2);
                l.push(b'\'');
                for &b in *v {
                    if b == b'\'' {
                        l.push(b'\'');
                    }
                    l.push(b);
                }
                l.push(b'\'');
                Some(l)
            }
            _ => None,
        };
        if let Some(l) = literal {
            out.extend_from_slice(&sql[from..t.start as usize]);
            out.extend_from_slice(&l);
            from = t.end as usize;
        }
    }
    out.extend_from_slice(&sql[from..]);
    Some(out)
}

/// The text of a plain `'...'` literal (quotes removed), or of a word or number.
fn plain_value<'a>(sql: &'a [u8], t: &Token) -> Option<&'a [u8]> {
    let raw = &sql[t.range()];
    match t.kind {
        TokenKind::Word | TokenKind::Number => Some(raw),
        // Only a plain literal: `E'...'`, `U&'...'` and dollar quotes may spell
        // anything through escapes. A doubled quote stays doubled, which no
        // name that matters contains.
        // With standard_conforming_strings off the server reads `'rol\e'` as
        // `role`: a literal with a backslash is not plain.
        TokenKind::String
            if raw.first() == Some(&b'\'') && raw.len() >= 2 && !raw.contains(&b'\\') =>
        {
            Some(&raw[1..raw.len() - 1])
        }
        _ => None,
    }
}

/// A setting name: `name`, `"name"`, `a.b` (identifiers joined by dots), read
/// up to `TO`/`=`. `None` if the text does not show it.
fn setting_name(sql: &[u8], toks: &[Token]) -> Option<(Vec<u8>, usize)> {
    let mut name = Vec::new();
    let mut i = 0;
    loop {
        let t = toks.get(i)?;
        let raw = &sql[t.range()];
        match t.kind {
            TokenKind::Word => name.extend_from_slice(raw),
            TokenKind::QuotedIdent if raw.first() == Some(&b'"') => {
                let inner = &raw[1..raw.len() - 1];
                if memchr::memchr(b'"', inner).is_some() {
                    return None;
                }
                name.extend_from_slice(inner);
            }
            _ => return None,
        }
        i += 1;
        if toks
            .get(i)
            .is_some_and(|t| t.kind == TokenKind::Punct(b'.'))
        {
            name.push(b'.');
            i += 1;
        } else {
            return Some((name, i));
        }
    }
}

/// A PostgreSQL `SET ...` or `RESET ...` statement (its tokens).
fn set_statement(sql: &[u8], s: &[Token], reset: bool) -> Statement {
    let plain = Statement {
        kind: Kind::Set,
        flags: Flags::default(),
    };
    if reset {
        // RESET name / ALL / ROLE / SESSION AUTHORIZATION: back to the defaults
        // the session started with.
        return plain;
    }
    let w = |i: usize, kw: &str| s.get(i).is_some_and(|t| is(sql, t, kw));
    // SET [SESSION | LOCAL] ...; `SESSION AUTHORIZATION` and `SESSION
    // CHARACTERISTICS` are statements of their own.
    let mut at = 1;
    if w(1, "LOCAL") || (w(1, "SESSION") && !w(2, "AUTHORIZATION") && !w(2, "CHARACTERISTICS")) {
        at = 2;
    }
    let value_at = |i: usize| -> Value<'_> {
        match s.get(i) {
            Some(t) if is(sql, t, "DEFAULT") => Value::Default,
            Some(t) if s.len() == i + 1 => plain_value(sql, t).map_or(Value::Unknown, Value::Text),
            None => Value::Default,
            Some(_) => Value::Unknown,
        }
    };
    if w(at, "SESSION") && w(at + 1, "AUTHORIZATION") {
        return setting(b"session_authorization", value_at(at + 2));
    }
    if w(at, "ROLE") {
        // A bare word is folded to lower case by the server's parser.
        if w(at + 1, "NONE") && s.len() == at + 2 {
            return setting(b"role", Value::Text(b"none"));
        }
        return setting(b"role", value_at(at + 1));
    }
    if w(at, "SCHEMA") {
        return setting(b"search_path", value_at(at + 1));
    }
    if w(at, "NAMES") {
        return setting(b"client_encoding", value_at(at + 1));
    }
    for kw in [
        "TRANSACTION",
        "CHARACTERISTICS",
        "CONSTRAINTS",
        "TIME",
        "XML",
    ] {
        if w(at, kw) {
            return plain;
        }
    }
    let Some((name, used)) = setting_name(sql, &s[at.min(s.len())..]) else {
        return unknown_setting();
    };
    let next = at + used;
    let value = if w(next, "TO")
        || s.get(next)
            .is_some_and(|t| t.kind == TokenKind::Punct(b'='))
    {
        value_at(next + 1)
    } else {
        // `SET name FROM CURRENT` (function options) or something the server
        // will refuse.
        Value::Unknown
    };
    setting(&name, value)
}

/// `set_config(name, value, is_local)`: `args` are the tokens after its `(`.
fn set_config(sql: &[u8], args: &[Token]) -> Statement {
    let comma = |i: usize| {
        args.get(i)
            .is_some_and(|t| t.kind == TokenKind::Punct(b','))
    };
    let name = args
        .first()
        .filter(|t| t.kind == TokenKind::String && comma(1))
        .and_then(|t| plain_value(sql, t));
    let param = |i: usize| args.get(i).is_some_and(|t| t.kind == TokenKind::Param);
    let Some(name) = name else {
        let mut st = unknown_setting();
        st.flags.bound_setting = param(0);
        return st;
    };
    let value = match args.get(2) {
        Some(t) if comma(3) => plain_value(sql, t)
            .filter(|_| t.kind == TokenKind::String)
            .map_or(Value::Unknown, Value::Text),
        _ => Value::Unknown,
    };
    let mut st = setting(name, value);
    // Only where the value decides how it is judged (an encoding; a role or
    // `none`) does it need the Bind's value.
    st.flags.bound_setting = value == Value::Unknown
        && param(2)
        && (st.kind == Kind::SetRole || st.flags.encoding.is_some());
    st
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

/// Convenience: classify with a fresh classifier.
pub fn classify(sql: &[u8], dialect: Dialect) -> Vec<Statement> {
    let mut out = Vec::new();
    Classifier::new().classify(sql, dialect, &mut out);
    out
}

impl From<LexError> for Statement {
    fn from(_: LexError) -> Self {
        opaque_other()
    }
}
