//! What unchanged clients send at login and as session settings, through a target
//! with no guardrails and no masking (everything passes, nothing is dropped) and
//! through a guarded one (each setting judged like the `SET` it amounts to; only
//! encodings the lexer reads exactly as the server does).

mod support;

use std::net::SocketAddr;

use sluice_protocols::postgres::encode;
use support::pg::*;
use support::*;

const RULES: &str = r#"
[guardrails.prod]
rules = [
  { kinds = ["drop"], action = "deny", message = "destructive DDL is blocked on db" },
  { kinds = ["set_search_path"], groups = ["dba"], action = "allow" },
]
"#;

struct Setup {
    pg: PgCluster,
    keys: Keys,
    _sluice: Sluice,
    /// No guardrails, no masking.
    open: SocketAddr,
    /// Guardrails `prod`.
    guarded: SocketAddr,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let pg = PgCluster::start();
    pg.psql(
        "CREATE ROLE reader; CREATE TABLE t (id int); INSERT INTO t VALUES (1); \
         CREATE SCHEMA evil",
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let (open, guarded) = (free_addr(), free_addr());
    let config = format!(
        "[gateway]\nshards = 2\n{}{}{}{RULES}",
        keys.identity_block(),
        pg_target("open", open, pg.addr(), ""),
        pg_target(
            "guarded",
            guarded,
            pg.addr(),
            "guardrails = \"prod\"\napprovers = [\"dba\"]"
        ),
    );
    let sluice = Sluice::start(&config);
    Setup {
        pg,
        keys,
        _sluice: sluice,
        open,
        guarded,
        _dir: dir,
    }
}

fn one(addr: SocketAddr, token: &str, env: &[(&str, &str)], sql: &str) -> Result<String, String> {
    let o = psql_with_env(addr, token, env, &["-q", "-A", "-t", "-c", sql]);
    if o.status.success() {
        Ok(stdout(&o).trim().to_owned())
    } else {
        Err(stderr(&o))
    }
}

fn raw_login(addr: SocketAddr, token: &str, params: &[(&str, &str)]) -> Vec<(u8, Vec<u8>)> {
    RawPg::start(addr, token, params).0
}

fn login_error(msgs: &[(u8, Vec<u8>)]) -> (String, String) {
    let (tag, body) = msgs.last().unwrap();
    assert_eq!(*tag, b'E', "login was accepted: {msgs:?}");
    error_fields(body)
}

#[test]
fn startup_parameters_are_passed_whatever_their_case_never_dropped() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    // libpq sends PGTZ, PGDATESTYLE and PGGEQO as `timezone`, `datestyle`, `geqo`.
    let env = [
        ("PGTZ", "America/Los_Angeles"),
        ("PGDATESTYLE", "SQL, DMY"),
        ("PGGEQO", "off"),
        (
            "PGOPTIONS",
            "-c intervalstyle=postgres_verbose --statement-timeout=7s -c my.tag=a\\ b",
        ),
    ];
    for addr in [s.open, s.guarded] {
        let got = one(
            addr,
            &t,
            &env,
            "SELECT current_setting('TimeZone') || '|' || current_setting('DateStyle') || '|' || \
             current_setting('geqo') || '|' || current_setting('IntervalStyle') || '|' || \
             current_setting('statement_timeout') || '|' || current_setting('my.tag')",
        )
        .unwrap();
        assert_eq!(
            got,
            "America/Los_Angeles|SQL, DMY|off|postgres_verbose|7s|a b"
        );
    }
    // Raw: any spelling of a name, and a parameter the server does not know is
    // the server's to refuse (it is passed, not dropped).
    let msgs = raw_login(
        s.open,
        &t,
        &[("TimeZone", "UTC"), ("EXTRA_FLOAT_DIGITS", "1")],
    );
    assert_eq!(msgs.last().unwrap().0, b'Z', "{msgs:?}");
    let (code, msg) = login_error(&raw_login(s.open, &t, &[("no_such_setting", "1")]));
    assert_eq!(code, "42704", "{msg}");
    assert!(msg.contains("no_such_setting"), "{msg}");
    // A protocol parameter spelled another way, or set through `options`, is
    // refused: lower-cased and passed on it would choose the upstream login.
    for p in [
        ("User", "postgres"),
        ("OPTIONS", "-c role=reader"),
        ("Replication", "database"),
        ("options", "-c user=postgres"),
    ] {
        let (code, msg) = login_error(&raw_login(s.guarded, &t, &[p]));
        assert_eq!(code, "0A000", "{p:?}: {msg}");
        assert!(msg.contains("not allowed through Sluice"), "{msg}");
    }
    // Switches other than -c are refused with their name.
    let err = one(s.open, &t, &[("PGOPTIONS", "-F")], "SELECT 1").unwrap_err();
    assert!(
        err.contains("startup option `-F` is not supported"),
        "{err}"
    );
}

#[test]
fn role_and_search_path_pass_on_an_open_target() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    for (sql, want) in [
        ("SET ROLE reader; SELECT current_user", "reader"),
        (
            "SET SESSION AUTHORIZATION reader; SELECT session_user",
            "reader",
        ),
        (
            "SET search_path = evil, public; SHOW search_path",
            "evil, public",
        ),
        ("SET LOCAL search_path = default; SELECT 1", "1"),
        (
            "SELECT set_config('search_path', 'evil', false); SHOW search_path",
            "evil\nevil",
        ),
        ("SELECT set_config('TimeZone', 'UTC', false)", "UTC"),
        ("SET client_encoding TO UTF8; SHOW client_encoding", "UTF8"),
        (
            "SET client_encoding = 'LATIN1'; SHOW client_encoding",
            "LATIN1",
        ),
        ("SET application_name = 'names'; SELECT 1", "1"),
        (
            "DO $$ DECLARE names text; BEGIN NULL; END $$; SELECT 2",
            "2",
        ),
    ] {
        assert_eq!(one(s.open, &t, &[], sql).as_deref(), Ok(want), "{sql}");
    }
    let env = [("PGOPTIONS", "-c search_path=evil -c role=reader")];
    assert_eq!(
        one(
            s.open,
            &t,
            &env,
            "SELECT current_user || ' ' || current_setting('search_path')"
        )
        .as_deref(),
        Ok("reader evil")
    );
}

#[test]
fn role_and_search_path_follow_the_rules_on_a_guarded_target() {
    let s = setup();
    let agent = s.keys.token("agent-7", &["agents"]);
    let dba = s.keys.token("dana", &["dba", "agents"]);
    for sql in [
        "SET ROLE reader",
        "SET SESSION AUTHORIZATION reader",
        "SELECT set_config('role', 'reader', false)",
        "SELECT 1, set_config('role', 'reader', false)",
        "SET search_path = evil, public",
        "SELECT set_config('search_path', 'evil', false)",
        "SELECT set_config($$search_path$$, 'evil', false)",
    ] {
        let err = one(s.guarded, &agent, &[], sql).unwrap_err();
        assert!(
            err.contains("is not allowed on target `guarded`"),
            "{sql}: {err}"
        );
    }
    // The rule lets dba choose a search path, not a role.
    assert_eq!(
        one(
            s.guarded,
            &dba,
            &[],
            "SET search_path = evil; SHOW search_path"
        )
        .as_deref(),
        Ok("evil")
    );
    assert!(one(s.guarded, &dba, &[], "SET ROLE reader").is_err());
    // Resets, ordinary settings and set_config of them pass.
    for sql in [
        "RESET ROLE; SELECT 1",
        "SET ROLE NONE; SELECT 1",
        "SET search_path TO DEFAULT; SELECT 1",
        "SELECT set_config('statement_timeout', '5s', false) = '5s'",
    ] {
        assert!(one(s.guarded, &agent, &[], sql).is_ok(), "{sql}");
    }
    // At startup, through `options`, the same rules apply, naming the parameter.
    let err = one(
        s.guarded,
        &agent,
        &[("PGOPTIONS", "-c search_path=evil")],
        "SELECT 1",
    )
    .unwrap_err();
    assert!(
        err.contains("startup parameter search_path=evil is not allowed through Sluice"),
        "{err}"
    );
    assert_eq!(
        one(
            s.guarded,
            &dba,
            &[("PGOPTIONS", "-c search_path=evil")],
            "SHOW search_path"
        )
        .as_deref(),
        Ok("evil")
    );
    let (code, msg) = login_error(&raw_login(s.guarded, &agent, &[("ROLE", "reader")]));
    assert_eq!(code, "42501", "{msg}");
    assert!(msg.contains("startup parameter role=reader"), "{msg}");
}

#[test]
fn only_encodings_the_lexer_reads_like_the_server_are_allowed() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    for addr in [s.open, s.guarded] {
        // Every spelling PostgreSQL resolves to a multibyte encoding whose
        // characters can hide a backslash: at startup, in options, by SET.
        for name in [
            "windows936",
            "WINDOWS-932",
            "win949",
            "Big5",
            "sjis",
            "GB18030",
        ] {
            let (code, msg) = login_error(&raw_login(addr, &t, &[("client_encoding", name)]));
            assert_eq!(code, "42501", "{name}: {msg}");
            assert!(msg.contains("client_encoding"), "{msg}");
            let opts = format!("-c client_encoding={name}");
            let (code, _) = login_error(&raw_login(addr, &t, &[("options", &opts)]));
            assert_eq!(code, "42501", "{name} in options");
        }
        for sql in [
            "SET client_encoding = 'windows936'",
            "SET NAMES 'SJIS'",
            "SELECT set_config('client_encoding', 'big5', false)",
            "SELECT set_config('client_encoding', $$big5$$, false)",
        ] {
            let err = one(addr, &t, &[], sql).unwrap_err();
            assert!(
                err.contains("client_encoding may only be set"),
                "{sql}: {err}"
            );
        }
    }
    // The walk-around it closes: in GBK `\x81\x5c` is one character to the
    // server, a backslash escaping the quote to a byte-wise lexer.
    let (code, _) = login_error(&raw_login(
        s.guarded,
        &t,
        &[("client_encoding", "windows936")],
    ));
    assert_eq!(code, "42501");
    assert_eq!(s.pg.psql("SELECT count(*) FROM t"), "1");
    // A role's default encoding applies when the client names none: refused too.
    s.pg.psql("ALTER ROLE postgres SET client_encoding = 'SJIS'");
    let (code, msg) = login_error(&raw_login(s.open, &t, &[]));
    s.pg.psql("ALTER ROLE postgres RESET client_encoding");
    assert_eq!(code, "0A000", "{msg}");
    assert!(msg.contains("client_encoding SJIS"), "{msg}");
}

#[test]
fn the_backend_pid_a_client_sees_is_the_servers() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    let (msgs, mut raw) = RawPg::start(s.open, &t, &[]);
    let key = msgs
        .iter()
        .find(|(tag, _)| *tag == b'K')
        .expect("BackendKeyData");
    let pid = u32::from_be_bytes(key.1[..4].try_into().unwrap());
    let mut out = Vec::new();
    encode::query(&mut out, b"SELECT pg_backend_pid()");
    raw.send(&out);
    let got = raw.read_until(b'Z');
    let row = got.iter().find(|(tag, _)| *tag == b'D').expect("a row");
    // DataRow: column count (2 bytes), length (4 bytes), text.
    let theirs: u32 = String::from_utf8_lossy(&row.1[6..]).parse().unwrap();
    assert_eq!(pid, theirs, "BackendKeyData and pg_backend_pid() agree");
    // The secret key is the gateway's: the server's own never reaches the
    // client, so only the gateway can forward a cancel (tested with a driver in
    // postgres.rs).
    assert_eq!(key.1.len(), 8);
}

/// A setting whose value is a query parameter is judged with the value the
/// `Bind` carries (drivers send `set_config('client_encoding', $1, false)`).
#[test]
fn parameterised_settings_are_judged_by_their_values() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    let mut c = connect(s.open, &t, "postgres").unwrap();
    let set = "SELECT set_config($1, $2, false)";
    let got: String = c
        .query_one(set, &[&"default_transaction_read_only", &"on"])
        .unwrap()
        .get(0);
    assert_eq!(got, "on");
    let got: String = c
        .query_one(
            "SELECT set_config('client_encoding', $1, false)",
            &[&"LATIN1"],
        )
        .unwrap()
        .get(0);
    assert_eq!(got, "LATIN1");
    c.batch_execute("SET client_encoding = 'UTF8'").unwrap();
    for (name, value) in [
        ("client_encoding", "SJIS"),
        ("client_encoding", "windows936"),
    ] {
        let err = c.query_one(set, &[&name, &value]).expect_err(value);
        assert_eq!(sqlstate(&err), "42501", "{value}");
        assert!(
            message(&err).contains("client_encoding may only be set"),
            "{err:?}"
        );
    }
    // The same prepared statement, bound again with other values, is judged
    // again: the role is not for the guarded target's agents.
    let role: String = c.query_one(set, &[&"role", &"reader"]).unwrap().get(0);
    assert_eq!(role, "reader");
    let mut g = connect(s.guarded, &t, "postgres").unwrap();
    let stmt = g.prepare(set).unwrap();
    let ok: String = g
        .query_one(&stmt, &[&"statement_timeout", &"5s"])
        .unwrap()
        .get(0);
    assert_eq!(ok, "5s");
    let err = g.query_one(&stmt, &[&"role", &"reader"]).unwrap_err();
    assert!(message(&err).contains("role"), "{err:?}");
    let err = g.query_one(&stmt, &[&"search_path", &"evil"]).unwrap_err();
    assert!(message(&err).contains("search_path"), "{err:?}");
    let who: String = g
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(who, "postgres");
    // As psycopg sends them: each query re-parses the unnamed statement and
    // binds it at once. The next query's Bind is judged as the next query,
    // never as the set_config parsed before it.
    let (_, mut raw) = RawPg::start(s.open, &t, &[]);
    let round_trip = |raw: &mut RawPg, sql: &str, value: &str| {
        let mut out = Vec::new();
        encode::parse(&mut out, b"", sql.as_bytes(), &[]);
        encode::message(&mut out, b'B', |b| {
            b.extend_from_slice(b"\0\0");
            b.extend_from_slice(&0i16.to_be_bytes());
            b.extend_from_slice(&1i16.to_be_bytes());
            b.extend_from_slice(&(value.len() as i32).to_be_bytes());
            b.extend_from_slice(value.as_bytes());
            b.extend_from_slice(&0i16.to_be_bytes());
        });
        encode::message(&mut out, b'E', |b| b.extend_from_slice(b"\0\0\0\0\0"));
        encode::message(&mut out, b'S', |_| {});
        raw.send(&out);
        raw.read_until(b'Z')
    };
    let tags = |m: &[(u8, Vec<u8>)]| m.iter().map(|(t, _)| *t as char).collect::<String>();
    let got = round_trip(
        &mut raw,
        "SELECT set_config('client_encoding', $1, false)",
        "UTF8",
    );
    assert_eq!(tags(&got), "12DCZ", "{got:?}");
    let got = round_trip(&mut raw, "SELECT $1::text", "text");
    assert_eq!(tags(&got), "12DCZ", "{got:?}");
    let got = round_trip(
        &mut raw,
        "SELECT set_config('client_encoding', $1, false)",
        "BIG5",
    );
    assert!(tags(&got).contains('E'), "{got:?}");
    // A declared type that changes the value on its way to text (bpchar trims
    // `'role   '` to `role`) is not judged by the Bind: refused at once.
    let mut raw = RawPg::login(s.guarded, &t);
    let mut out = Vec::new();
    let mut types = 1042u32.to_be_bytes().to_vec();
    types.extend_from_slice(&0u32.to_be_bytes());
    encode::parse(&mut out, b"", b"SELECT set_config($1, $2, false)", &types);
    encode::message(&mut out, b'S', |_| {});
    raw.send(&out);
    let got = raw.read_until(b'Z');
    assert!(
        got.iter().any(|(t, _)| *t == b'E'),
        "refused at Parse: {got:?}"
    );
}
