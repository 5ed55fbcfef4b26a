//! Function calls: which ones hide code, write or change session state, which
//! are known to be read-only built-ins, and [`calls`] of named functions.

use crate::sql::lexer::{lex, Dialect, Options, Token, TokenKind};

use super::settings::{set_config, unknown_setting};
use super::{is, merge, Statement};

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

/// Functions known to hide code or write, called at `toks[i]`: `name (`,
/// schema-qualified too.
pub(super) fn function_at(
    sql: &[u8],
    toks: &[Token],
    i: usize,
    dialect: Dialect,
    st: &mut Statement,
) {
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
