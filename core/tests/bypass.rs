//! The walk-arounds a review found against PostgreSQL guardrails, each tried
//! through the real gateway (psql and raw protocol) against a real server, and
//! the harmless look-alikes that must keep working.

mod support;

use std::net::SocketAddr;

use sluice_protocols::postgres::encode;
use support::pg::*;
use support::*;

/// Like `config/examples/postgres.toml`, with approvals in `nowait` mode.
const RULES: &str = r#"
[guardrails.prod]
rules = [
  { kinds = ["drop", "truncate"], action = "deny", message = "destructive DDL is blocked" },
  { kinds = ["delete", "update"], unbounded = true, action = "deny", message = "add a WHERE clause" },
  { kinds = ["do", "call", "execute", "opaque"], action = "deny", message = "code Sluice cannot see is not allowed" },
  { kinds = ["delete", "update", "alter"], action = "approve" },
  { kinds = ["insert"], groups = ["cautious"], action = "approve" },
  { kinds = ["merge"], groups = ["mergers"], action = "approve" },
]
functions = ["harmless"]

# Allows code blocks, so what they run decides.
[guardrails.lenient]
rules = [
  { kinds = ["drop", "truncate"], action = "deny", message = "destructive DDL is blocked" },
  { kinds = ["delete", "update"], unbounded = true, action = "deny", message = "add a WHERE clause" },
]
"#;

struct Setup {
    pg: PgCluster,
    keys: Keys,
    _sluice: Sluice,
    guarded: SocketAddr,
    open: SocketAddr,
    lenient: SocketAddr,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let pg = PgCluster::start();
    pg.psql(
        "CREATE TABLE t (id int primary key, note text); \
         INSERT INTO t SELECT g, 'n' FROM generate_series(1, 5) g; \
         CREATE TABLE s (id int, \"delete\" text); INSERT INTO s VALUES (1, 'x'), (9, 'y'); \
         CREATE FUNCTION wipe() RETURNS void LANGUAGE sql AS $$ DELETE FROM t $$; \
         CREATE FUNCTION harmless(int) RETURNS int LANGUAGE sql AS $$ SELECT $1 + 1 $$",
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let (guarded, open, lenient) = (free_addr(), free_addr(), free_addr());
    let config = format!(
        "[gateway]\nshards = 2\n{}{}{}{RULES}",
        keys.identity_block(),
        pg_target(
            "db",
            guarded,
            pg.addr(),
            "guardrails = \"prod\"\napprovers = [\"dba\"]\napproval_mode = \"nowait\""
        ),
        pg_target("open", open, pg.addr(), ""),
    ) + &pg_target("lenient", lenient, pg.addr(), "guardrails = \"lenient\"");
    let sluice = Sluice::start(&config);
    Setup {
        pg,
        keys,
        _sluice: sluice,
        guarded,
        open,
        lenient,
        _dir: dir,
    }
}

fn run(addr: SocketAddr, token: &str, sql: &str) -> Result<String, String> {
    let o = psql_with(addr, token, &["-q", "-A", "-t", "-c", sql]);
    if o.status.success() {
        Ok(stdout(&o).trim().to_owned())
    } else {
        Err(stderr(&o))
    }
}

#[test]
fn merge_is_judged_by_its_actions() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    let err = run(
        s.guarded,
        &t,
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
    )
    .unwrap_err();
    assert!(
        err.contains("approval"),
        "held for approval (nowait): {err}"
    );
    assert_eq!(s.pg.psql("SELECT count(*) FROM t"), "5", "nothing deleted");
    // A MERGE that only inserts is an insert, which these rules do not hold.
    run(
        s.guarded,
        &t,
        "MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'merged')",
    )
    .unwrap();
    assert_eq!(s.pg.psql("SELECT count(*) FROM t"), "6");
    // ... and is held where inserts are, or where rules name `merge`.
    let merger = s.keys.token("mia", &["agents", "mergers"]);
    let err = run(
        s.guarded,
        &merger,
        "MERGE INTO t USING s ON t.id = s.id + 200 WHEN NOT MATCHED THEN INSERT VALUES (s.id + 200, 'm')",
    )
    .unwrap_err();
    assert!(err.contains("approval"), "{err}");
    let careful = s.keys.token("carl", &["agents", "cautious"]);
    let err = run(
        s.guarded,
        &careful,
        "MERGE INTO t USING s ON t.id = s.id + 100 WHEN NOT MATCHED THEN INSERT VALUES (s.id + 100, 'm')",
    )
    .unwrap_err();
    assert!(err.contains("approval"), "{err}");
}

#[test]
fn copy_program_and_server_functions_are_refused() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    let marker = s._dir.path().join("ran");
    let sql = format!("COPY (SELECT 1) TO PROGRAM 'touch {}'", marker.display());
    // COPY ... PROGRAM is refused by default on every target, rules or not.
    let err = run(s.open, &t, &sql).unwrap_err();
    assert!(err.contains("COPY ... PROGRAM"), "{err}");
    let err = run(s.guarded, &t, &sql).unwrap_err();
    assert!(err.contains("code Sluice cannot see"), "{err}");
    assert!(err.contains("program statement refused"), "{err}");
    assert!(!marker.exists(), "no command ran on the server");
    for sql in [
        "SELECT pg_read_file('/etc/hostname')",
        "SELECT * FROM pg_ls_dir('.')",
        "SELECT lo_import('/etc/hostname')",
        "SELECT pg_terminate_backend(1)",
        "SELECT dblink_exec('dbname=postgres', 'DROP TABLE t')",
    ] {
        let err = run(s.guarded, &t, sql).unwrap_err();
        assert!(err.contains("code Sluice cannot see"), "{sql}: {err}");
    }
    // The same through a fast-path FunctionCall (pg_read_file(text) by OID).
    let mut raw = RawPg::login(s.guarded, &t);
    let mut out = Vec::new();
    encode::message(&mut out, b'F', |b| {
        b.extend_from_slice(&2624u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&13i32.to_be_bytes());
        b.extend_from_slice(b"/etc/hostname");
        b.extend_from_slice(&0i16.to_be_bytes());
    });
    raw.send(&out);
    let got = raw.read_until(b'Z');
    let (_, err) = got.iter().find(|(tag, _)| *tag == b'E').expect("refused");
    assert!(
        error_fields(err).1.contains("code Sluice cannot see"),
        "{got:?}"
    );
    assert!(got.iter().all(|(tag, _)| *tag != b'V'), "no result");
}

#[test]
fn functions_cannot_smuggle_statements_past_the_rules() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    for sql in [
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ DELETE FROM t; SELECT 1 $$",
        "CREATE FUNCTION g() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'drop table t'; END $$",
        "CREATE PROCEDURE p() LANGUAGE sql AS $$ DELETE FROM t $$",
        "CREATE RULE r AS ON INSERT TO s DO ALSO DELETE FROM t",
        "DO $$ BEGIN EXECUTE 'drop table t'; END $$",
    ] {
        let err = run(s.guarded, &t, sql).unwrap_err();
        assert!(
            ["code Sluice cannot see", "destructive DDL", "add a WHERE clause"]
                .iter()
                .any(|why| err.contains(why)),
            "{sql}: {err}"
        );
    }
    assert_eq!(
        s.pg.psql("SELECT count(*) FROM pg_proc WHERE proname IN ('f', 'g', 'p')"),
        "0"
    );
    assert_eq!(s.pg.psql("SELECT count(*) FROM t"), "5");
}

#[test]
fn code_blocks_are_judged_by_what_they_run() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    // Where DO is allowed, the statements inside it are judged all the same,
    // in plain and dollar-quoted bodies and in `EXECUTE 'literal'`.
    for (sql, why) in [
        ("DO $$ BEGIN DELETE FROM t; END $$", "add a WHERE clause"),
        (
            "DO 'BEGIN IF true THEN UPDATE t SET note = ''x''; END IF; END'",
            "add a WHERE clause",
        ),
        (
            "DO $$ BEGIN EXECUTE 'drop table t'; END $$",
            "destructive DDL",
        ),
        (
            "DO $a$ BEGIN EXECUTE $b$TRUNCATE t$b$; END $a$",
            "destructive DDL",
        ),
        (
            "CREATE FUNCTION w() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DELETE FROM t; END $$",
            "add a WHERE clause",
        ),
    ] {
        let err = run(s.lenient, &t, sql).unwrap_err();
        assert!(err.contains(why), "{sql}: {err}");
    }
    assert_eq!(s.pg.psql("SELECT count(*) FROM t"), "5");
    // A bounded change inside a block runs.
    run(
        s.lenient,
        &t,
        "DO $$ BEGIN UPDATE t SET note = 'm' WHERE id = 1; END $$",
    )
    .unwrap();
    assert_eq!(s.pg.psql("SELECT note FROM t WHERE id = 1"), "m");
}

#[test]
fn functions_defined_in_the_database_are_opaque_unless_named() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    for sql in [
        "SELECT wipe()",
        "SELECT public.wipe()",
        "SELECT \"wipe\"()",
        "SELECT 1 FROM s WHERE id = 1 AND (SELECT wipe()) IS NULL",
    ] {
        let err = run(s.guarded, &t, sql).unwrap_err();
        assert!(
            err.contains("code Sluice cannot see") && err.contains("`public.wipe`")
                || err.contains("`wipe`"),
            "{sql}: {err}"
        );
    }
    assert_eq!(s.pg.psql("SELECT count(*) FROM t"), "5");
    // Named in the guardrails' `functions`: judged as the statement around it.
    assert_eq!(run(s.guarded, &t, "SELECT harmless(1)").as_deref(), Ok("2"));
    // Built-in and extension functions are not affected.
    assert_eq!(
        run(s.guarded, &t, "SELECT lower('A'), count(*) FROM t").as_deref(),
        Ok("a|5")
    );
    // Without guardrails nothing is looked up or refused.
    assert_eq!(run(s.open, &t, "SELECT harmless(2)").as_deref(), Ok("3"));
}

#[test]
fn harmless_look_alikes_keep_working() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    for (sql, want) in [
        ("SELECT \"delete\" FROM s ORDER BY id", "x\ny"),
        (
            "SELECT 'DROP TABLE t; DELETE FROM t'",
            "DROP TABLE t; DELETE FROM t",
        ),
        ("SELECT lower('MERGE'), count(*) FROM t", "merge|5"),
        ("SELECT $$COPY t TO PROGRAM 'x'$$", "COPY t TO PROGRAM 'x'"),
    ] {
        assert_eq!(run(s.guarded, &t, sql).as_deref(), Ok(want), "{sql}");
    }
}

#[test]
fn settings_cannot_be_reached_through_catalogs_or_defaults() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    s.pg.psql("CREATE ROLE reader");
    // pg_settings' rule calls set_config with whatever a write puts there.
    for addr in [s.guarded, s.open] {
        for sql in [
            "UPDATE pg_settings SET setting = 'reader' WHERE name = 'role'",
            "UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'",
        ] {
            let err = run(addr, &t, sql).unwrap_err();
            assert!(err.contains("ERROR"), "{sql}: {err}");
        }
        // Reading it is fine.
        assert_eq!(
            run(
                addr,
                &t,
                "SELECT count(*) FROM pg_settings WHERE name = 'search_path'"
            )
            .as_deref(),
            Ok("1")
        );
    }
    // Defaults for later sessions are the setting they make.
    let err = run(
        s.guarded,
        &t,
        "ALTER ROLE CURRENT_USER SET search_path = evil, public",
    )
    .unwrap_err();
    assert!(err.contains("search_path"), "{err}");
    let err = run(
        s.open,
        &t,
        "ALTER ROLE CURRENT_USER SET client_encoding = 'SJIS'",
    )
    .unwrap_err();
    assert!(err.contains("client_encoding"), "{err}");
    assert_eq!(
        s.pg.psql("SELECT count(*) FROM pg_db_role_setting"),
        "0",
        "no default was stored"
    );
    // SQL run from a string is opaque.
    let err = run(
        s.guarded,
        &t,
        "SELECT * FROM ts_stat('SELECT to_tsvector(set_config(''role'', ''reader'', false))')",
    )
    .unwrap_err();
    assert!(err.contains("code Sluice cannot see"), "{err}");
}

/// The gateway's count of sync groups stays the server's: a Sync that reaches
/// the server during COPY IN (libpq sends one with every extended COPY) is
/// not a group of its own, and a Query inside an unfinished extended group
/// (which the server would discard unanswered after an error) is refused.
/// Out of step, a later ParseComplete was matched to a skipped Parse and a
/// statement waiting for approval ran without one.
#[test]
fn sync_groups_stay_in_step_so_approvals_hold() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    let mut raw = RawPg::login(s.guarded, &t);
    let tags = |m: &[(u8, Vec<u8>)]| m.iter().map(|(t, _)| *t as char).collect::<String>();
    let bind = |out: &mut Vec<u8>, statement: &[u8]| {
        encode::message(out, b'B', |b| {
            b.push(0);
            b.extend_from_slice(statement);
            b.push(0);
            b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        })
    };
    let execute = |out: &mut Vec<u8>| encode::message(out, b'E', |b| b.extend_from_slice(&[0; 5]));
    let sync = |out: &mut Vec<u8>| encode::message(out, b'S', |_| {});
    // An extended COPY FROM STDIN, libpq's way.
    let mut out = Vec::new();
    encode::parse(&mut out, b"", b"COPY s FROM STDIN", &[]);
    bind(&mut out, b"");
    execute(&mut out);
    sync(&mut out);
    raw.send(&out);
    assert_eq!(tags(&raw.read_until(b'G')), "12G");
    let mut out = Vec::new();
    encode::message(&mut out, b'd', |b| b.extend_from_slice(b"7\tz\n"));
    encode::message(&mut out, b'c', |_| {});
    sync(&mut out);
    raw.send(&out);
    assert_eq!(tags(&raw.read_until(b'Z')), "CZ");
    // A failing Bind: the Parse after it is skipped by the server.
    let mut out = Vec::new();
    bind(&mut out, b"zz");
    encode::parse(&mut out, b"", b"SELECT 1", &[]);
    sync(&mut out);
    raw.send(&out);
    assert_eq!(tags(&raw.read_until(b'Z')), "EZ");
    // A statement that needs approval, prepared, then bound.
    let mut out = Vec::new();
    encode::parse(&mut out, b"", b"DELETE FROM t WHERE id = 1", &[]);
    sync(&mut out);
    raw.send(&out);
    assert_eq!(tags(&raw.read_until(b'Z')), "1Z");
    let mut out = Vec::new();
    bind(&mut out, b"");
    execute(&mut out);
    sync(&mut out);
    raw.send(&out);
    let got = raw.read_until(b'Z');
    let (_, err) = got.iter().find(|(t, _)| *t == b'E').expect("held, not run");
    assert!(error_fields(err).1.contains("approval"), "{got:?}");
    assert_eq!(s.pg.psql("SELECT count(*) FROM t"), "5", "nothing deleted");
    // A Query inside an unfinished extended group ends the session.
    let mut raw = RawPg::login(s.guarded, &t);
    let mut out = Vec::new();
    bind(&mut out, b"zz");
    encode::query(&mut out, b"SELECT 1");
    sync(&mut out);
    raw.send(&out);
    let got = raw.read_until(b'E');
    let (code, msg) = error_fields(&got.last().unwrap().1);
    assert_eq!(code, "08P01", "{msg}");
    assert!(msg.contains("send Sync first"), "{msg}");
}
