//! SQL guardrails end to end through psql, the driver and raw protocol.

mod support;

use sluice_protocols::postgres::encode;
use support::pg::*;
use support::*;

const RULES: &str = r#"
[guardrails.prod]
rules = [
  { kinds = ["drop", "truncate"], action = "deny", message = "destructive DDL is blocked on db" },
  { kinds = ["delete", "update"], unbounded = true, action = "deny", message = "add a WHERE clause" },
  { kinds = ["do", "call", "execute"], action = "deny", message = "opaque code is not allowed" },
]
"#;

struct Setup {
    pg: PgCluster,
    keys: Keys,
    _sluice: Sluice,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let pg = PgCluster::start();
    pg.psql("CREATE TABLE orders (id int primary key, note text); INSERT INTO orders SELECT g, 'n' FROM generate_series(1, 10) g");
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let addr = free_addr();
    let config = format!(
        "[gateway]\nshards = 2\n{}{}{RULES}",
        keys.identity_block(),
        pg_target("db", addr, pg.addr(), "guardrails = \"prod\"")
    );
    let sluice = Sluice::start(&config);
    Setup {
        pg,
        keys,
        _sluice: sluice,
        addr,
        _dir: dir,
    }
}

#[test]
fn psql_drop_table_is_blocked_and_the_table_survives() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    let o = psql_with(s.addr, &t, &["-c", "DROP TABLE orders"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("ERROR:  destructive DDL is blocked on db"),
        "{}",
        stderr(&o)
    );
    let o = psql_with(
        s.addr,
        &t,
        &[
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "drop /* sneaky */ TABLE orders",
        ],
    );
    assert!(
        stderr(&o).contains("ERROR:  42501: destructive DDL is blocked on db"),
        "{}",
        stderr(&o)
    );
    assert_eq!(s.pg.psql("SELECT count(*) FROM orders"), "10");
}

#[test]
fn unbounded_delete_and_cte_delete_are_blocked() {
    let s = setup();
    let mut c = connect(s.addr, &s.keys.token("agent-7", &["agents"]), "postgres").unwrap();
    for sql in [
        "DELETE FROM orders",
        "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone",
        "UPDATE orders SET note = 'x'",
    ] {
        let err = c.batch_execute(sql).expect_err(sql);
        assert_eq!(
            (sqlstate(&err), message(&err)),
            ("42501".into(), "add a WHERE clause".into()),
            "{sql}"
        );
    }
    c.batch_execute("DELETE FROM orders WHERE id = 1")
        .expect("bounded delete runs");
    assert_eq!(s.pg.psql("SELECT count(*) FROM orders"), "9");
    assert_eq!(
        s.pg.psql("SELECT count(*) FROM orders WHERE note = 'x'"),
        "0"
    );
}

#[test]
fn a_hidden_drop_refuses_the_whole_multi_statement_message() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    let o = psql_with(
        s.addr,
        &t,
        &[
            "-c",
            "INSERT INTO orders VALUES (100, 'sneak'); SELECT 1; DROP TABLE orders",
        ],
    );
    assert!(
        stderr(&o).contains("destructive DDL is blocked on db"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        s.pg.psql("SELECT count(*) FROM orders WHERE id = 100"),
        "0",
        "nothing of the message ran"
    );
    assert_eq!(s.pg.psql("SELECT count(*) FROM orders"), "10");
}

#[test]
fn prepared_statement_path_is_refused_and_its_name_never_runs() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    let mut c = connect(s.addr, &t, "postgres").unwrap();
    let err = match c.prepare("DELETE FROM orders") {
        Ok(_) => panic!("the DELETE was prepared"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&err), "42501");

    // Raw protocol: a named Parse refused, then Bind/Execute of that name.
    let mut raw = RawPg::login(s.addr, &t);
    let mut out = Vec::new();
    encode::parse(&mut out, b"wipe", b"DELETE FROM orders", &[]);
    out.extend_from_slice(b"S\0\0\0\x04");
    raw.send(&out);
    let msgs = raw.read_until(b'Z');
    let (code, msg) = error_fields(&msgs.iter().find(|(t, _)| *t == b'E').expect("an error").1);
    assert_eq!(
        (code.as_str(), msg.as_str()),
        ("42501", "add a WHERE clause")
    );
    assert_eq!(msgs.last().unwrap().1, b"I", "ready for query, idle");

    let mut out = Vec::new();
    // Bind "" to statement "wipe", Execute, Sync.
    encode::message(&mut out, b'B', |o| {
        o.extend_from_slice(b"\0wipe\0\0\0\0\0\0\0")
    });
    encode::message(&mut out, b'E', |o| o.extend_from_slice(b"\0\0\0\0\0"));
    out.extend_from_slice(b"S\0\0\0\x04");
    raw.send(&out);
    let msgs = raw.read_until(b'Z');
    let (code, _) = error_fields(&msgs.iter().find(|(t, _)| *t == b'E').expect("an error").1);
    assert_eq!(code, "26000", "prepared statement does not exist");
    assert_eq!(s.pg.psql("SELECT count(*) FROM orders"), "10", "never ran");
}

#[test]
fn a_refusal_inside_a_pipeline_rolls_back_the_implicit_transaction() {
    let s = setup();
    let mut raw = RawPg::login(s.addr, &s.keys.token("agent-7", &["agents"]));
    let mut out = Vec::new();
    // INSERT (allowed) then DROP (refused) with no Sync in between, then Sync:
    // exactly as if the server had refused the DROP, the INSERT is rolled back.
    for sql in [
        "INSERT INTO orders VALUES (200, 'pipelined')",
        "DROP TABLE orders",
    ] {
        encode::parse(&mut out, b"", sql.as_bytes(), &[]);
        encode::message(&mut out, b'B', |o| o.extend_from_slice(b"\0\0\0\0\0\0\0\0"));
        encode::message(&mut out, b'E', |o| o.extend_from_slice(b"\0\0\0\0\0"));
    }
    out.extend_from_slice(b"S\0\0\0\x04");
    raw.send(&out);
    let msgs = raw.read_until(b'Z');
    let tags: Vec<char> = msgs.iter().map(|(t, _)| *t as char).collect();
    assert_eq!(tags, ['1', '2', 'C', 'E', 'Z'], "{msgs:?}");
    assert_eq!(
        error_fields(&msgs[3].1).1,
        "destructive DDL is blocked on db"
    );
    assert_eq!(s.pg.psql("SELECT count(*) FROM orders WHERE id = 200"), "0");
    // The session carries on.
    let mut out = Vec::new();
    encode::query(&mut out, b"SELECT 1");
    raw.send(&out);
    let msgs = raw.read_until(b'Z');
    assert!(msgs.iter().any(|(t, _)| *t == b'D'));
}

#[test]
fn search_path_role_and_startup_options_are_denied_by_default() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    let mut c = connect(s.addr, &t, "postgres").unwrap();
    for sql in [
        "SET search_path = evil, public",
        "SET ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "SELECT set_config('search_path', 'evil', false)",
    ] {
        let err = c.batch_execute(sql).expect_err(sql);
        assert_eq!(sqlstate(&err), "42501", "{sql}");
    }
    c.batch_execute("SET statement_timeout = '5s'")
        .expect("ordinary settings pass");
    // Encodings whose multibyte characters can hide a quote or backslash from
    // the classifier are refused, at startup and by SET.
    let err = c
        .batch_execute("SET client_encoding = 'SJIS'")
        .expect_err("encoding change refused");
    assert_eq!(sqlstate(&err), "42501");
    let o = psql_with_env(
        s.addr,
        &t,
        &[("PGCLIENTENCODING", "SJIS")],
        &["-c", "SELECT 1"],
    );
    assert!(
        stderr(&o).contains("startup parameter client_encoding=SJIS is not allowed"),
        "{}",
        stderr(&o)
    );
    let o = psql_with_env(
        s.addr,
        &t,
        &[("PGOPTIONS", "-c search_path=evil")],
        &["-c", "SELECT 1"],
    );
    assert!(
        stderr(&o).contains("startup parameter search_path=evil is not allowed through Sluice"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn opaque_code_follows_the_policy() {
    let s = setup();
    let mut c = connect(s.addr, &s.keys.token("agent-7", &["agents"]), "postgres").unwrap();
    // A statement Sluice cannot read: opaque.
    let err = c
        .batch_execute("DO $$ BEGIN EXECUTE 'DROP ' || 'TABLE orders'; END $$")
        .expect_err("DO refused");
    assert_eq!(message(&err), "opaque code is not allowed");
    // A literal one is read, and judged as what it is.
    let err = c
        .batch_execute("DO $$ BEGIN EXECUTE 'DROP TABLE orders'; END $$")
        .expect_err("DO refused");
    assert_eq!(message(&err), "destructive DDL is blocked on db");
    assert_eq!(s.pg.psql("SELECT count(*) FROM orders"), "10");
}
