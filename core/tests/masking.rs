//! Masking through the real gateway: every path a value can leak through.

mod support;

use postgres::fallible_iterator::FallibleIterator;
use support::pg::*;
use support::*;

/// Strict column rules are off: these tests hold the masker itself to every
/// path a value can take (strict rules are tested in `strict_columns.rs`).
const PROFILE: &str = r#"
[masking.pii]
strict_columns = false
detectors = ["email", "credit_card", "ssn", "phone"]
columns = { card_number = "last4", "customers.secret" = "full", owner = "hash", badge = "full", salary = "redact", codes = "full", ref_id = "hash", code = "last4" }
hash_key_env = "SLUICE_TEST_MASK_KEY"
entities = { employee_id = { pattern = "EMP-[0-9]{6}" }, account = { pattern = "ACCT[0-9]{8}", validator = "luhn" } }
"#;

const TEST_MASK_KEY: &str = "a-test-key-of-32-bytes-0123456789";

fn setup() -> (
    PgCluster,
    Keys,
    Sluice,
    std::net::SocketAddr,
    tempfile::TempDir,
) {
    let pg = PgCluster::start();
    pg.psql(
        "CREATE TABLE customers (id int, email text, card_number text, ssn text, secret text, phone text);
         INSERT INTO customers VALUES
           (1, 'jane.doe@example.com', '4111 1111 1111 1111', '078-05-1120', 'opensesame', '+1 415 555 0123'),
           (2, 'bob@example.org', '5500-0000-0000-0004', '219-09-9999', 'hunter22', '(212) 555-0188');
         CREATE TABLE pay (badge bigint, salary numeric(10,2), codes int[], ref_id bigint, code smallint);
         INSERT INTO pay VALUES (123456789, 98765.43, '{1,2}', 77, 12345), (5, 1.00, '{3}', 77, 12345);
         CREATE TABLE vault (secret text);
         INSERT INTO vault VALUES ('plainwords');
         CREATE VIEW cview AS SELECT * FROM customers;
         -- A planted function must not steer Sluice's catalog lookup.
         CREATE FUNCTION public.lower(name) RETURNS text LANGUAGE sql AS $$ SELECT ''::text $$;
         CREATE TABLE orders (owner text, amount int);
         INSERT INTO orders VALUES ('jane.doe@example.com', 10), ('bob@example.org', 5), ('jane.doe@example.com', 20)",
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let addr = free_addr();
    let audit = dir.path().join("audit");
    let config = format!(
        "[gateway]\nshards = 2\n{}[audit]\ndir = \"{}\"\ndurability = \"batched\"\n\n{}{PROFILE}",
        keys.identity_block(),
        audit.display(),
        pg_target("db", addr, pg.addr(), "masking = \"pii\"")
    );
    let sluice = Sluice::start_with_env(&config, &[("SLUICE_TEST_MASK_KEY", TEST_MASK_KEY)]);
    (pg, keys, sluice, addr, dir)
}

#[test]
fn select_results_aliases_json_errors_and_copy_are_masked() {
    let (_pg, keys, _s, addr, _dir) = setup();
    let t = keys.token("agent", &["agents"]);
    let q = |sql: &str| {
        let o = psql_with(addr, &t, &["-At", "-c", sql]);
        assert!(
            o.status.success() || !stderr(&o).is_empty(),
            "{}",
            stderr(&o)
        );
        format!("{}{}", stdout(&o), stderr(&o))
    };
    let rows = q("SELECT email, card_number, ssn, secret, phone FROM customers ORDER BY id");
    assert_eq!(
        rows.trim(),
        "j*******@*******.com|**** **** **** 1111|***-**-****|**********|+* *** *** ****\n\
         b**@*******.org|****-****-****-0004|***-**-****|********|(***) ***-****"
    );
    // An alias does not hide a value from content detection.
    assert_eq!(
        q("SELECT ssn AS x, email AS y FROM customers WHERE id = 1").trim(),
        "***-**-****|j*******@*******.com"
    );
    // A `table.column` rule follows its column under an alias (by the table
    // OID and column number in the RowDescription), and keeps matching the
    // name everywhere else: another table, a view, a copy made in the
    // session, an expression.
    assert_eq!(
        q("SELECT secret AS s FROM customers WHERE id = 1").trim(),
        "**********"
    );
    assert_eq!(q("SELECT secret FROM vault").trim(), "**********");
    assert_eq!(
        q("SELECT secret FROM cview WHERE id = 1").trim(),
        "**********"
    );
    assert_eq!(
        q("CREATE TEMP TABLE t AS SELECT * FROM customers; SELECT secret FROM t WHERE id = 1")
            .lines()
            .last()
            .unwrap_or_default(),
        "**********"
    );
    assert_eq!(
        q("SELECT 'x' || secret AS secret FROM vault").trim(),
        "***********"
    );
    // JSON built server-side.
    let json = q("SELECT row_to_json(c) FROM customers c WHERE id = 2");
    assert!(
        json.contains("\"email\":\"b**@*******.org\"") && !json.contains("bob@"),
        "{json}"
    );
    // A failed cast echoes the value in the error message.
    let err = q("SELECT email::int FROM customers WHERE id = 1");
    assert!(
        err.contains("invalid input syntax")
            && err.contains("j*******@*******.com")
            && !err.contains("jane.doe"),
        "{err}"
    );
    // The gateway's own denial marker cannot be borrowed to dodge masking.
    let forged = q("SELECT ('sluice_denied_ ' || ssn)::int FROM customers WHERE id = 1");
    assert!(!forged.contains("078-05-1120"), "{forged}");
    // `hash`: the same value always gets the same pseudonym (of the same
    // shape), so results can still be grouped and matched; the value is gone.
    let owners = q("SELECT owner, amount FROM orders ORDER BY amount");
    let owners: Vec<&str> = owners
        .lines()
        .map(|l| l.split('|').next().unwrap())
        .collect();
    assert_eq!(owners.len(), 3, "{owners:?}");
    assert_eq!(owners[1], owners[2], "jane twice: {owners:?}");
    assert_ne!(owners[0], owners[1]);
    assert!(
        owners
            .iter()
            .all(|o| !o.contains("jane") && !o.contains("bob") && !o.contains("example")),
        "{owners:?}"
    );
    assert_eq!(owners[1].len(), "jane.doe@example.com".len());
    assert_eq!(owners[1].find('@'), Some(8), "shape kept: {owners:?}");
    // Another query naming the column `owner` gets the same pseudonym for the
    // same value: a join across results still lines up.
    let again = q("SELECT email AS owner FROM customers WHERE id = 1");
    assert_eq!(again.trim(), owners[1]);
    // Custom entities from the profile, with their validator.
    assert_eq!(
        q("SELECT 'badge EMP-123456, ACCT12345674, ACCT12345678'").trim(),
        "badge ***-******, ************, ACCT12345678"
    );
    // COPY out.
    let copy = q("\\copy (SELECT email, ssn FROM customers ORDER BY id) TO STDOUT");
    assert!(
        !copy.contains("jane.doe")
            && !copy.contains("078-05-1120")
            && copy.contains("j*******@*******.com"),
        "{copy}"
    );
}

/// Any value's raw bytes, whatever its type (to see binary results as sent).
struct Raw(Vec<u8>);

impl<'a> postgres::types::FromSql<'a> for Raw {
    fn from_sql(
        _: &postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }
}

/// One extended-protocol round trip with binary results and a Describe of the
/// portal (as JDBC sends it): the RowDescription carries the real formats.
fn binary_query(raw: &mut RawPg, sql: &str, until: u8) -> Vec<(u8, Vec<u8>)> {
    use sluice_protocols::postgres::encode;
    let mut out = Vec::new();
    encode::parse(&mut out, b"", sql.as_bytes(), &[]);
    encode::message(&mut out, b'B', |b| {
        b.extend_from_slice(b"\0\0"); // portal, statement: unnamed
        b.extend_from_slice(&0i16.to_be_bytes()); // parameter formats
        b.extend_from_slice(&0i16.to_be_bytes()); // parameters
        b.extend_from_slice(&1i16.to_be_bytes()); // one result format for all:
        b.extend_from_slice(&1i16.to_be_bytes()); // binary
    });
    encode::message(&mut out, b'D', |b| b.extend_from_slice(b"P\0"));
    encode::message(&mut out, b'E', |b| {
        b.extend_from_slice(b"\0");
        b.extend_from_slice(&0i32.to_be_bytes());
    });
    encode::message(&mut out, b'S', |_| {});
    raw.send(&out);
    raw.read_until(until)
}

/// Extended-protocol messages by hand, as a client that wants to walk around
/// column rules would send them.
mod ext {
    use sluice_protocols::postgres::encode;

    pub fn parse(out: &mut Vec<u8>, name: &str, sql: &str) {
        encode::parse(out, name.as_bytes(), sql.as_bytes(), &[]);
    }
    /// Bind with every result column in `format` (0 text, 1 binary).
    pub fn bind(out: &mut Vec<u8>, portal: &str, statement: &str, format: i16) {
        encode::message(out, b'B', |b| {
            b.extend_from_slice(portal.as_bytes());
            b.push(0);
            b.extend_from_slice(statement.as_bytes());
            b.push(0);
            b.extend_from_slice(&0i16.to_be_bytes());
            b.extend_from_slice(&0i16.to_be_bytes());
            b.extend_from_slice(&1i16.to_be_bytes());
            b.extend_from_slice(&format.to_be_bytes());
        });
    }
    pub fn describe(out: &mut Vec<u8>, kind: u8, name: &str) {
        encode::describe(out, kind, name.as_bytes());
    }
    pub fn execute(out: &mut Vec<u8>, portal: &str, max_rows: i32) {
        encode::message(out, b'E', |b| {
            b.extend_from_slice(portal.as_bytes());
            b.push(0);
            b.extend_from_slice(&max_rows.to_be_bytes());
        });
    }
    pub fn sync(out: &mut Vec<u8>) {
        encode::message(out, b'S', |_| {});
    }
}

/// Column rules hold however a client splits statements, portals and round
/// trips: every Execute's rows are masked with its own portal's columns.
#[test]
fn extended_protocol_cannot_walk_around_column_rules() {
    let (_pg, keys, _s, addr, _dir) = setup();
    let t = keys.token("agent", &["agents"]);
    let mut raw = RawPg::login(addr, &t);
    let rows = |msgs: &[(u8, Vec<u8>)]| -> Vec<Vec<Option<Vec<u8>>>> {
        msgs.iter()
            .filter(|(tag, _)| *tag == b'D')
            .map(|(_, body)| values(body))
            .collect()
    };
    let tags =
        |msgs: &[(u8, Vec<u8>)]| -> String { msgs.iter().map(|(t, _)| *t as char).collect() };
    let clear = [&b"opensesame"[..], &b"hunter22"[..]];
    // Round trip 1: a harmless statement is described.
    let mut out = Vec::new();
    ext::parse(&mut out, "harmless", "SELECT id FROM customers ORDER BY id");
    ext::describe(&mut out, b'S', "harmless");
    ext::parse(
        &mut out,
        "secret",
        "SELECT secret FROM customers ORDER BY id",
    );
    ext::sync(&mut out);
    raw.send(&out);
    assert_eq!(tags(&raw.read_until(b'Z')), "1tT1Z");
    // Round trip 2: the protected one runs without a Describe.
    let mut out = Vec::new();
    ext::bind(&mut out, "", "secret", 0);
    ext::execute(&mut out, "", 0);
    ext::sync(&mut out);
    raw.send(&out);
    let got = raw.read_until(b'Z');
    assert_eq!(
        tags(&got),
        "2DDCZ",
        "the gateway's own Describe is never seen"
    );
    for row in rows(&got) {
        let v = row[0].clone().unwrap();
        assert!(
            !clear.contains(&&v[..]) && v.iter().all(|&b| b == b'*'),
            "{v:?}"
        );
    }
    // Two portals in one round trip, the harmless one described, the
    // protected one executed; and in binary, a row at a time.
    let mut out = Vec::new();
    ext::bind(&mut out, "p1", "harmless", 0);
    ext::bind(&mut out, "p2", "secret", 1);
    ext::describe(&mut out, b'P', "p1");
    ext::execute(&mut out, "p2", 1);
    ext::execute(&mut out, "p2", 1);
    ext::sync(&mut out);
    raw.send(&out);
    let got = raw.read_until(b'Z');
    assert_eq!(tags(&got), "22TDsDsZ");
    for row in rows(&got) {
        let v = row[0].clone().unwrap();
        assert!(v.iter().all(|&b| b == b'*'), "{v:?}");
    }
    // A failing Execute: the client sees the server's error, once.
    let mut out = Vec::new();
    ext::execute(&mut out, "nosuchportal", 0);
    ext::sync(&mut out);
    raw.send(&out);
    let got = raw.read_until(b'Z');
    assert_eq!(tags(&got), "EZ");
    assert!(
        error_fields(&got[0].1).1.contains("nosuchportal"),
        "{got:?}"
    );
    // COPY FROM STDIN in the extended protocol, with the Sync libpq pipelines
    // before the data (the server ignores it during the copy).
    let mut out = Vec::new();
    ext::parse(&mut out, "", "COPY vault FROM STDIN");
    ext::bind(&mut out, "", "", 0);
    ext::execute(&mut out, "", 0);
    ext::sync(&mut out);
    raw.send(&out);
    assert_eq!(tags(&raw.read_until(b'G')), "12G");
    let mut out = Vec::new();
    sluice_protocols::postgres::encode::message(&mut out, b'd', |b| b.extend_from_slice(b"more\n"));
    sluice_protocols::postgres::encode::message(&mut out, b'c', |_| {});
    ext::sync(&mut out);
    raw.send(&out);
    assert_eq!(tags(&raw.read_until(b'Z')), "CZ");
    // The session carries on in step.
    let mut out = Vec::new();
    sluice_protocols::postgres::encode::query(&mut out, b"SELECT secret FROM vault ORDER BY 1");
    raw.send(&out);
    let got = raw.read_until(b'Z');
    assert_eq!(tags(&got), "TDDCZ", "{got:?}");
}

/// The values of a DataRow body (`None`: NULL).
fn values(row: &[u8]) -> Vec<Option<Vec<u8>>> {
    let n = i16::from_be_bytes([row[0], row[1]]) as usize;
    let mut at = 2;
    (0..n)
        .map(|_| {
            let len = i32::from_be_bytes(row[at..at + 4].try_into().unwrap());
            at += 4;
            (len >= 0).then(|| {
                let v = row[at..at + len as usize].to_vec();
                at += len as usize;
                v
            })
        })
        .collect()
}

/// Column rules on binary results of types that are not text: zero of the
/// type (keyed bytes for `hash` on integers), or the session ends.
#[test]
fn column_rules_on_binary_non_text_values() {
    let (_pg, keys, _s, addr, _dir) = setup();
    let t = keys.token("agent", &["agents"]);
    let mut raw = RawPg::login(addr, &t);
    let answer = binary_query(
        &mut raw,
        "SELECT badge, salary, ref_id FROM pay ORDER BY badge",
        b'Z',
    );
    let rows: Vec<_> = answer
        .iter()
        .filter(|(tag, _)| *tag == b'D')
        .map(|(_, body)| values(body))
        .collect();
    assert_eq!(rows.len(), 2, "{answer:?}");
    for row in &rows {
        assert_eq!(row[0].as_deref(), Some(&[0u8; 8][..]), "badge = full");
        let salary = row[1].clone().unwrap();
        assert!(salary.len() >= 8, "{salary:?}");
        assert_ne!(salary[..2], [0, 0], "digit count kept");
        assert!(
            salary[2..6].iter().chain(&salary[8..]).all(|&b| b == 0),
            "salary = redact: zero, same scale: {salary:?}"
        );
    }
    assert_eq!(rows[0][2], rows[1][2], "same value, same pseudonym");
    assert_ne!(rows[0][2].as_deref(), Some(&77i64.to_be_bytes()[..]));
    // An array has no value Sluice can write in its place: the session ends.
    let answer = binary_query(&mut raw, "SELECT codes FROM pay", b'E');
    let (_, err) = answer
        .iter()
        .find(|(tag, _)| *tag == b'E')
        .expect("an error");
    assert!(error_fields(err).1.contains("cannot mask"), "{answer:?}");
    drop(raw);
    // The Describe of a statement reports text formats whatever the Bind asks
    // for: values are told apart by content. In the same round trip the
    // column types are known (zero of the type, keyed bytes for `hash`).
    let mut c = connect(addr, &t, "postgres").unwrap();
    let typed = c
        .query_typed("SELECT badge, ref_id FROM pay ORDER BY badge", &[])
        .unwrap();
    assert!(
        typed.iter().all(|r| r.get::<_, i64>(0) == 0),
        "badge = full"
    );
    let (a, b): (i64, i64) = (typed[0].get(1), typed[1].get(1));
    assert!(a == b && a != 77, "ref_id = hash: {a} {b}");
    // Binary 12345 is the bytes "09": it reads as text, but every Execute
    // carries the Describe of its own portal, so the gateway knows it is a
    // binary smallint (`last4` on text would have kept both bytes).
    let code = c.query_typed("SELECT code FROM pay", &[]).unwrap();
    assert!(
        code.iter().all(|r| r.get::<_, Raw>(0).0 == [0, 0]),
        "code = last4"
    );
    // A statement prepared in an earlier round trip gets the same exact
    // treatment: its rows are attributed to their own portal.
    let prepared = c
        .query("SELECT badge, salary, ref_id FROM pay ORDER BY badge", &[])
        .unwrap();
    for row in &prepared {
        assert_eq!(row.get::<_, Raw>(0).0, [0u8; 8], "badge = full");
        assert_eq!(
            row.get::<_, Raw>(2).0,
            typed[0].get::<_, Raw>(1).0,
            "ref_id = hash"
        );
    }
    // Text results of the same columns keep the text styles.
    let text = psql_with(
        addr,
        &t,
        &["-At", "-c", "SELECT badge, salary FROM pay ORDER BY badge"],
    );
    assert_eq!(stdout(&text).trim(), "*|*.**\n*********|*****.**");
}

#[test]
fn driver_binary_results_notifications_and_encoding() {
    let (_pg, keys, mut s, addr, dir) = setup();
    let t = keys.token("agent", &["agents"]);
    // A fast-path FunctionCall (no driver speaks it): textcat('078-05-', '1120')
    // returns an SSN, masked like any other value.
    let mut raw = RawPg::login(addr, &t);
    let oid: u32 = {
        let mut c = connect(addr, &t, "postgres").unwrap();
        let o: u32 = c
            .query_one("SELECT 'pg_catalog.textcat'::regproc::oid", &[])
            .unwrap()
            .get(0);
        o
    };
    let mut body = Vec::new();
    body.extend_from_slice(&oid.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes()); // argument formats: all text
    body.extend_from_slice(&2i16.to_be_bytes());
    for arg in [&b"078-05-"[..], b"1120"] {
        body.extend_from_slice(&(arg.len() as i32).to_be_bytes());
        body.extend_from_slice(arg);
    }
    body.extend_from_slice(&0i16.to_be_bytes()); // result format: text
    let mut msg = vec![b'F'];
    msg.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    msg.extend_from_slice(&body);
    raw.send(&msg);
    let answer = raw.read_until(b'Z');
    let (_, v) = answer
        .iter()
        .find(|(tag, _)| *tag == b'V')
        .unwrap_or_else(|| panic!("no FunctionCallResponse: {answer:?}"));
    assert_eq!(&v[4..], b"***-**-****", "{:?}", String::from_utf8_lossy(v));
    drop(raw);
    let mut c = connect(addr, &t, "postgres").unwrap();
    // The driver asks for binary results; text-like columns are still masked.
    let row = c
        .query_one(
            "SELECT email, card_number FROM customers WHERE id = $1",
            &[&1i32],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "j*******@*******.com");
    assert_eq!(row.get::<_, String>(1), "**** **** **** 1111");
    // Notifications carry payloads too.
    let mut l = connect(addr, &t, "postgres").unwrap();
    l.batch_execute("LISTEN leak").unwrap();
    c.batch_execute("NOTIFY leak, 'reach me at jane.doe@example.com'")
        .unwrap();
    let mut got = None;
    for _ in 0..50 {
        if let Ok(Some(n)) = l
            .notifications()
            .timeout_iter(std::time::Duration::from_millis(100))
            .next()
        {
            got = Some(n.payload().to_owned());
            break;
        }
    }
    assert_eq!(got.as_deref(), Some("reach me at j*******@*******.com"));
    // The session stays in UTF8 while masking is on.
    let err = c
        .batch_execute("SET client_encoding = 'LATIN1'")
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(
        message(&err).contains("client_encoding"),
        "{}",
        message(&err)
    );
    drop((c, l));
    s.signal(libc::SIGTERM);
    s.wait_exit(std::time::Duration::from_secs(20));
    let out = std::process::Command::new(sluice_bin())
        .args([
            "audit",
            "search",
            "--dir",
            dir.path().join("audit").to_str().unwrap(),
            "--type",
            "result",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"masked\":{\"email\":1,\"column_rule\":1}"),
        "masked counts in the audit log: {text}"
    );
}

#[test]
fn a_masked_row_larger_than_max_message_ends_the_session_with_an_error() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let addr = free_addr();
    let config = format!(
        "[gateway]\nshards = 1\nmax_message = 65536\n{}{}{PROFILE}",
        keys.identity_block(),
        pg_target("db", addr, pg.addr(), "masking = \"pii\"")
    );
    let _s = Sluice::start_with_env(&config, &[("SLUICE_TEST_MASK_KEY", TEST_MASK_KEY)]);
    let t = keys.token("agent", &["agents"]);
    let o = psql_with(
        addr,
        &t,
        &[
            "-At",
            "-c",
            "SELECT repeat('x', 200000) || 'jane@example.com'",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("exceeds max_message"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("jane@example.com"));
    // Rows within the limit are fine.
    let o = psql_with(addr, &t, &["-At", "-c", "SELECT 'small'"]);
    assert_eq!(stdout(&o).trim(), "small");
}
