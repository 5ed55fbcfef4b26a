//! Strict column rules through the real gateway: a protected column leaves the
//! server only as a plain result column (which is masked); every other way of
//! reading it (expressions, conditions, copies, views, whole rows, COPY) is
//! refused with 42501, through psql and the raw extended protocol.

mod support;

use std::net::SocketAddr;

use sluice_protocols::postgres::encode;
use support::pg::*;
use support::*;

const PROFILES: &str = r#"
[masking.pii]
detectors = ["email"]
columns = { ssn = "redact", "customers.card" = "last4" }

[masking.loose]
detectors = ["email"]
columns = { ssn = "redact" }
strict_columns = false
"#;

struct Setup {
    _pg: PgCluster,
    keys: Keys,
    sluice: Sluice,
    strict: SocketAddr,
    loose: SocketAddr,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let pg = PgCluster::start();
    pg.psql(
        "CREATE TABLE customers (id int primary key, name text, ssn text, card text);
         INSERT INTO customers VALUES (1, 'jane', '078-05-1120', '4111111111111111'),
                                      (2, 'bob', '219-09-9999', '5500000000000004');
         CREATE TABLE notes (id int, body text);
         -- Made by someone else: renames the protected column, and computes from it.
         CREATE VIEW renamed AS SELECT id, ssn AS x, reverse(ssn) AS y FROM customers;
         CREATE VIEW deeper AS SELECT id AS n, x AS z FROM renamed;
         -- Whole rows, which record no dependency on the column itself.
         CREATE VIEW rows_json AS SELECT c.id, row_to_json(c) AS j FROM customers c;
         CREATE FUNCTION get_ssn(int) RETURNS text LANGUAGE sql AS $$ SELECT ssn FROM customers WHERE id = $1 $$;
         ALTER TABLE customers ALTER COLUMN name SET NOT NULL;
         CREATE UNIQUE INDEX ON customers (ssn);
         ANALYZE customers",
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let (strict, loose) = (free_addr(), free_addr());
    let config = format!(
        "[gateway]\nshards = 1\n{}[audit]\ndir = \"{}\"\ndurability = \"batched\"\n\n{}{}{PROFILES}",
        keys.identity_block(),
        dir.path().join("audit").display(),
        pg_target("db", strict, pg.addr(), "masking = \"pii\""),
        pg_target("loose", loose, pg.addr(), "masking = \"loose\""),
    );
    let sluice = Sluice::start(&config);
    Setup {
        _pg: pg,
        keys,
        sluice,
        strict,
        loose,
        _dir: dir,
    }
}

/// Runs `sql` through psql: its output, or its error with the SQLSTATE.
fn run(addr: SocketAddr, token: &str, sql: &str) -> Result<String, String> {
    let o = psql_with(
        addr,
        token,
        &["-q", "-A", "-t", "-v", "VERBOSITY=verbose", "-c", sql],
    );
    if o.status.success() {
        Ok(stdout(&o).trim().to_owned())
    } else {
        Err(stderr(&o))
    }
}

#[test]
fn protected_columns_leave_only_as_masked_result_columns() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    // Plain reads are masked, not refused; writes are fine.
    assert_eq!(
        run(
            s.strict,
            &t,
            "SELECT id, name, ssn, card FROM customers ORDER BY id"
        )
        .unwrap(),
        "1|jane|***-**-****|************1111\n2|bob|***-**-****|************0004"
    );
    assert_eq!(
        run(s.strict, &t, "SELECT c.ssn FROM customers c WHERE c.id = 2").unwrap(),
        "***-**-****"
    );
    let all = run(s.strict, &t, "SELECT * FROM customers WHERE id = 1").unwrap();
    assert_eq!(all, "1|jane|***-**-****|************1111");
    for ok in [
        "INSERT INTO customers (id, name, ssn) VALUES (3, 'eve', '123-45-6789')",
        "UPDATE customers SET ssn = '987-65-4321' WHERE id = 3",
        "INSERT INTO customers AS c (id, name, ssn) VALUES (3, 'eve', '111-22-3333') ON CONFLICT (id) DO UPDATE SET ssn = EXCLUDED.ssn",
        "SELECT count(*) FROM customers",
        "COPY customers (id, name) TO STDOUT",
        "SELECT ssn FROM customers WHERE id = 3",
    ] {
        assert!(run(s.strict, &t, ok).is_ok(), "{ok}: {:?}", run(s.strict, &t, ok));
    }
    // A view over the column, under any name and any depth of views, is
    // masked in every column (which of them carries it is not known).
    assert_eq!(
        run(s.strict, &t, "SELECT x, y FROM renamed LIMIT 1").unwrap(),
        "***-**-****|****-**-***"
    );
    assert_eq!(
        run(s.strict, &t, "SELECT z FROM deeper LIMIT 1").unwrap(),
        "***-**-****"
    );
    // Every way of computing from the column is refused with 42501 and leaks nothing.
    for sql in [
        "SELECT reverse(ssn) FROM customers",
        "SELECT encode(ssn::bytea, 'hex') FROM customers",
        "SELECT ssn || 'x' FROM customers",
        "SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers",
        "SELECT substr(ssn, 1, 3) FROM customers",
        "SELECT ssn::int FROM customers",
        "SELECT id FROM customers WHERE ssn LIKE '078%'",
        "SELECT ssn AS x FROM customers",
        "SELECT x FROM (SELECT ssn AS x FROM customers) s",
        "WITH c AS (SELECT * FROM customers) SELECT reverse(c.ssn) FROM c",
        "SELECT reverse(b) FROM (SELECT * FROM customers) s(a, b, c, d)",
        "SELECT reverse(x) FROM customers AS c(a, b, x)",
        "SELECT row_to_json(c) FROM customers c",
        "SELECT c::text FROM customers c",
        "SELECT name FROM notes UNION SELECT ssn FROM customers",
        "CREATE TABLE stolen AS SELECT ssn FROM customers",
        "CREATE VIEW stolen AS SELECT ssn AS x FROM customers",
        "SELECT * INTO stolen FROM customers",
        "INSERT INTO notes SELECT id, ssn FROM customers",
        "UPDATE notes SET body = (SELECT ssn FROM customers LIMIT 1)",
        "COPY customers TO STDOUT",
        "COPY (SELECT ssn FROM customers) TO STDOUT",
        "ALTER TABLE customers RENAME COLUMN ssn TO plain",
        "SELECT reverse(x) FROM renamed",
        "SELECT reverse(z) FROM deeper",
        "SELECT id FROM renamed WHERE x LIKE '078%'",
        "SELECT card || '' FROM customers",
        // Found in review.
        "SELECT ARRAY['', ssn, '']::text::bytea FROM customers",
        "SELECT encode(c::text::bytea, 'base64') FROM notes o JOIN notes p ON true, customers c",
        "SELECT c::text FROM (customers c CROSS JOIN notes o)",
        "SELECT row_to_json(no) FROM customers AS no",
        "INSERT INTO notes (body) SELECT reverse(excluded.ssn) FROM customers excluded RETURNING body",
        "SELECT c.id FROM customers c NATURAL JOIN (SELECT '078-05-1120' AS ssn) v",
        "SELECT id, ssn FROM customers ORDER BY 2",
        "COPY BINARY customers TO STDOUT",
        "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'customers'",
        "SELECT j FROM rows_json WHERE id = 1",
        "SELECT get_ssn(1)",
        "SELECT query_to_xml('select ssn from customers', true, false, '')",
        "DO $$ BEGIN RAISE NOTICE '%', (SELECT ssn FROM customers LIMIT 1); END $$",
        "PREPARE p AS SELECT ssn FROM customers; CREATE TABLE stolen2 AS EXECUTE p",
        // Second review.
        "SELECT c.to_json FROM customers c",
        "UPDATE customers c SET name = c.to_json::text WHERE id = 1",
        "TABLE customers ORDER BY 3",
        "CREATE INDEX ON customers ((reverse(ssn)::int)) WHERE id = 2",
        "ALTER TABLE customers RENAME TO foo",
        "ALTER TABLE customers ADD CHECK ((reverse(to_json(customers)->>'ssn'))::int > 0)",
        "INSERT INTO customers (id, name, ssn) VALUES (101, 'x', '078-05-1120') ON CONFLICT DO NOTHING RETURNING id",
        // Third review.
        "SELECT translate(c::text, '0123456789', 'abcdefghij') AS order FROM customers c",
        "SELECT c.to_json AS where FROM customers c",
        "TABLE customers ORDER BY ('x' || translate(row_to_json(customers)->>'ssn', '0', 'a'))::int",
        "SELECT translate(query, '0123456789', 'abcdefghij') FROM pg_stat_activity",
        "INSERT INTO customers (id, name, ssn) VALUES (999, 'p', '078-05-1120') ON CONFLICT (ssn) DO UPDATE SET ssn = EXCLUDED.ssn RETURNING id",
        "CREATE TABLE part_copy (extra int) INHERITS (customers)",
    ] {
        let err = run(s.strict, &t, sql).expect_err(sql);
        assert!(err.contains("42501"), "{sql}: {err}");
        assert!(
            !err.contains("078-05") && !err.contains("0211-50"),
            "{sql}: {err}"
        );
    }
    // Views built on whole rows are masked in every column.
    let j = run(s.strict, &t, "SELECT j FROM rows_json LIMIT 1").unwrap();
    assert!(!j.contains("078") && !j.contains("219"), "{j}");
    // An integrity error's detail ("Failing row contains (...)") is hidden.
    let err = run(
        s.strict,
        &t,
        "UPDATE customers SET name = NULL WHERE id = 1",
    )
    .unwrap_err();
    assert!(err.contains("23502") && !err.contains("078-05"), "{err}");
    // Nothing was copied or renamed.
    assert_eq!(
        run(s.strict, &t, "SELECT count(*) FROM notes").unwrap(),
        "0"
    );
    assert!(run(s.strict, &t, "SELECT 1 FROM stolen").is_err());
    // The refusal names the column and is in the log.
    let err = run(s.strict, &t, "SELECT reverse(ssn) FROM customers").unwrap_err();
    assert!(err.contains("`ssn` is a protected column"), "{err}");
    assert!(s.sluice.logs().contains("statement_denied"));
    // With `strict_columns = false` only plain result columns are masked.
    assert_eq!(
        run(
            s.loose,
            &t,
            "SELECT reverse(ssn) FROM customers WHERE id = 1"
        )
        .unwrap(),
        "0211-50-870"
    );
}

#[test]
fn extended_protocol_and_fast_path_are_held_to_strict_rules() {
    let s = setup();
    let t = s.keys.token("agent-7", &["agents"]);
    let mut c = RawPg::login(s.strict, &t);
    // Parse of a harmless statement, then the protected one in a later round
    // trip: refused at its Parse, whatever was described before.
    let mut out = Vec::new();
    encode::parse(&mut out, b"ok", b"SELECT id FROM customers", &[]);
    encode::describe(&mut out, b'S', b"ok");
    encode::message(&mut out, b'S', |_| {});
    c.send(&out);
    let msgs = c.read_until(b'Z');
    assert!(msgs.iter().all(|(tag, _)| *tag != b'E'), "{msgs:?}");
    out.clear();
    encode::parse(&mut out, b"bad", b"SELECT reverse(ssn) FROM customers", &[]);
    encode::message(&mut out, b'B', |b| {
        b.extend_from_slice(b"\0bad\0");
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    });
    encode::message(&mut out, b'E', |b| b.extend_from_slice(b"\0\0\0\0\0"));
    encode::message(&mut out, b'S', |_| {});
    c.send(&out);
    let msgs = c.read_until(b'Z');
    let err = msgs.iter().find(|(tag, _)| *tag == b'E').expect("an error");
    assert_eq!(error_fields(&err.1).0, "42501", "{msgs:?}");
    assert!(
        msgs.iter()
            .all(|(tag, body)| *tag != b'D' || !String::from_utf8_lossy(body).contains("0211")),
        "{msgs:?}"
    );
    // A fast-path FunctionCall (any function may read any column) is refused.
    out.clear();
    encode::message(&mut out, b'F', |b| {
        b.extend_from_slice(&870u32.to_be_bytes()); // lower(text)
        b.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0, 0, 1, b'A', 0, 0]);
    });
    c.send(&out);
    let msgs = c.read_until(b'Z');
    let err = msgs.iter().find(|(tag, _)| *tag == b'E').expect("an error");
    assert_eq!(error_fields(&err.1).0, "42501", "{msgs:?}");
    // The session is still in step.
    out.clear();
    encode::query(&mut out, b"SELECT ssn FROM customers WHERE id = 1");
    c.send(&out);
    let msgs = c.read_until(b'Z');
    let row = msgs.iter().find(|(tag, _)| *tag == b'D').expect("a row");
    assert!(
        String::from_utf8_lossy(&row.1).contains("***-**-****"),
        "{msgs:?}"
    );
}
