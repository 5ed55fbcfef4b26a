//! The Postgres gateway with real clients (psql, pgbench, the `postgres` driver)
//! against a throw-away PostgreSQL cluster.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use support::pg::*;
use support::*;

struct Setup {
    pg: PgCluster,
    keys: Keys,
    sluice: Sluice,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

fn setup_with(extra_target: &str, extra_top: &str) -> Setup {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let addr = free_addr();
    let config = format!(
        "[gateway]\nshards = 2\nadmin = \"{}\"\n{extra_top}\n{}{}",
        free_addr(),
        keys.identity_block(),
        pg_target("db", addr, pg.addr(), extra_target)
    );
    let sluice = Sluice::start(&config);
    Setup {
        pg,
        keys,
        sluice,
        addr,
        _dir: dir,
    }
}

fn setup() -> Setup {
    setup_with("", "")
}

#[test]
fn psql_queries_copy_describe_and_multi_statement() {
    let s = setup();
    let t = s.keys.token("alice", &["sre"]);
    let o = psql_with(
        s.addr,
        &t,
        &["-c", "CREATE TABLE items (id int primary key, name text)"],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    let rows: String = (1..=500).map(|i| format!("{i},item {i}\n")).collect();
    std::fs::write(&csv, &rows).unwrap();
    let copy_in = format!("\\copy items FROM '{}' WITH (FORMAT csv)", csv.display());
    let o = psql_with(s.addr, &t, &["-c", &copy_in]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.pg.psql("SELECT count(*) FROM items"), "500");

    let o = psql_with(
        s.addr,
        &t,
        &[
            "-c",
            "\\copy (SELECT * FROM items ORDER BY id) TO STDOUT WITH (FORMAT csv)",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), rows, "copy out returns every row");

    let o = psql_with(s.addr, &t, &["-c", "\\d items"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("Table \"public.items\"") && stdout(&o).contains("items_pkey"),
        "{}",
        stdout(&o)
    );

    let o = psql_with(
        s.addr,
        &t,
        &[
            "-At",
            "-c",
            "SELECT 1; SELECT 'two'; SELECT count(*) FROM items",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "1\ntwo\n500");
}

#[test]
fn pgbench_simple_extended_and_prepared() {
    let s = setup();
    let t = s.keys.token("bench", &["agents"]);
    let pgbench = |args: &[&str]| {
        std::process::Command::new("pgbench")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &s.addr.port().to_string(),
                "-U",
                "x",
            ])
            .args(args)
            .arg("postgres")
            .env("PGPASSWORD", &t)
            .output()
            .expect("pgbench")
    };
    let o = pgbench(&["-i", "-s", "1", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for mode in ["simple", "extended", "prepared"] {
        let o = pgbench(&["-c", "4", "-j", "2", "-t", "100", "-M", mode]);
        let out = stdout(&o);
        assert!(o.status.success(), "{mode}: {out}{}", stderr(&o));
        assert!(
            out.contains("number of transactions actually processed: 400/400"),
            "{mode}: {out}"
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "{mode}: {out}"
        );
    }
}

#[test]
fn driver_prepared_binary_transactions_listen_notify_and_cancel() {
    let s = setup();
    let t = s.keys.token("app", &["agents"]);
    let mut c = connect(s.addr, &t, "postgres").expect("connect through sluice");
    c.batch_execute(
        "CREATE TABLE acct (id int primary key, balance numeric, seen timestamptz default now())",
    )
    .unwrap();
    // Prepared statements with binary parameters and results.
    let ins = c
        .prepare("INSERT INTO acct (id, balance) VALUES ($1, $2::int)")
        .unwrap();
    for i in 0..50 {
        c.execute(&ins, &[&i, &(i * 10)]).unwrap();
    }
    let row = c
        .query_one(
            "SELECT count(*), sum(id)::int8 FROM acct WHERE id >= $1",
            &[&10i32],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (40, (10..50).sum::<i64>())
    );
    let ts: std::time::SystemTime = c
        .query_one("SELECT seen FROM acct WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert!(
        ts.elapsed().unwrap() < Duration::from_secs(600),
        "binary timestamptz decoded"
    );

    // Transactions: rollback undoes, commit keeps.
    let mut tx = c.transaction().unwrap();
    tx.execute("UPDATE acct SET balance = 0 WHERE id = 1", &[])
        .unwrap();
    tx.rollback().unwrap();
    let mut tx = c.transaction().unwrap();
    tx.execute("UPDATE acct SET balance = 99 WHERE id = 2", &[])
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(
        s.pg.psql("SELECT balance FROM acct WHERE id IN (1, 2) ORDER BY id"),
        "10\n99"
    );

    // LISTEN/NOTIFY across two sessions through the gateway.
    let mut listener = connect(s.addr, &t, "postgres").unwrap();
    listener.batch_execute("LISTEN jobs").unwrap();
    c.batch_execute("NOTIFY jobs, 'hello from sluice'").unwrap();
    let mut got = None;
    for _ in 0..50 {
        let mut n = listener.notifications();
        let mut it = n.timeout_iter(Duration::from_millis(100));
        if let Ok(Some(note)) = it.next() {
            got = Some((note.channel().to_owned(), note.payload().to_owned()));
            break;
        }
    }
    assert_eq!(got, Some(("jobs".into(), "hello from sluice".into())));

    // Cancellation: the cancel key the client got is the gateway's, and it works.
    let cancel = c.cancel_token();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        cancel.cancel_query(postgres::NoTls)
    });
    let started = std::time::Instant::now();
    let err = c
        .batch_execute("SELECT pg_sleep(30)")
        .expect_err("pg_sleep is cancelled");
    canceller.join().unwrap().expect("cancel request sent");
    assert_eq!(sqlstate(&err), "57014", "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // The session is still usable after the cancel.
    assert_eq!(c.query_one("SELECT 7", &[]).unwrap().get::<_, i32>(0), 7);
}

#[test]
fn upstream_scram_md5_and_cleartext_logins_with_injected_credentials() {
    let pg = PgCluster::start();
    pg.psql("SET password_encryption = 'scram-sha-256'; CREATE ROLE app_scram LOGIN PASSWORD 's3cret-scram'");
    pg.psql("SET password_encryption = 'md5'; CREATE ROLE app_md5 LOGIN PASSWORD 's3cret-md5'");
    pg.psql("CREATE ROLE app_clear LOGIN PASSWORD 's3cret-clear'");
    pg.prepend_hba(
        "host all app_scram 127.0.0.1/32 scram-sha-256\nhost all app_md5 127.0.0.1/32 md5\nhost all app_clear 127.0.0.1/32 password",
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let (a, b, cl) = (free_addr(), free_addr(), free_addr());
    let target = |name: &str, listen, user: &str, var: &str| {
        format!(
            "[[target]]\nname = \"{name}\"\nprotocol = \"postgres\"\nlisten = \"{listen}\"\nupstream = \"{}\"\ncredentials = {{ user = \"{user}\", password_env = \"{var}\" }}\naccess = [\"sre\"]\ndatabase = \"postgres\"\n",
            pg.addr()
        )
    };
    let config = format!(
        "[gateway]\nshards = 1\n{}{}{}{}",
        keys.identity_block(),
        target("scram", a, "app_scram", "SCRAM_PW"),
        target("md5", b, "app_md5", "MD5_PW"),
        target("clear", cl, "app_clear", "CLEAR_PW")
    );
    let _s = Sluice::start_with_env(
        &config,
        &[
            ("SCRAM_PW", "s3cret-scram"),
            ("MD5_PW", "s3cret-md5"),
            ("CLEAR_PW", "s3cret-clear"),
        ],
    );
    let t = keys.token("alice", &["sre"]);
    for (addr, user) in [(a, "app_scram"), (b, "app_md5"), (cl, "app_clear")] {
        let mut c = connect(addr, &t, "ignored-db").expect("login through sluice");
        let who: String = c
            .query_one("SELECT current_user::text", &[])
            .unwrap()
            .get(0);
        assert_eq!(who, user, "the target's credentials were injected");
        // Should the server ever echo the password Sluice logged in with, the
        // client never sees it: errors and notices have it hidden (here the
        // client itself makes the server say it, to show the mechanism).
        let secret = match user {
            "app_scram" => "s3cret-scram",
            "app_md5" => "s3cret-md5",
            _ => "s3cret-clear",
        };
        let err = c
            .batch_execute(&format!("SELECT '{secret}'::int"))
            .expect_err("not an integer");
        let text = format!("{err:?}");
        assert!(!text.contains(secret) && text.contains("****"), "{text}");
        // And in rows (`pg_stat_activity` of an `ALTER ROLE ... PASSWORD`).
        let row: String = c
            .query_one(&format!("SELECT 'was {secret}'::text"), &[])
            .unwrap()
            .get(0);
        assert!(!row.contains(secret) && row.starts_with("was *"), "{row}");
    }
}

#[test]
fn tls_with_sslmode_require_and_require_tls_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let s = setup_with("require_tls = true", &tls);
    let t = s.keys.token("alice", &["sre"]);
    let o = psql_with(
        s.addr,
        &t,
        &[
            "-At",
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ],
    );
    // psql's default sslmode=prefer negotiates TLS with the gateway.
    assert!(o.status.success(), "{}", stderr(&o));
    let uri = format!(
        "postgresql://x@127.0.0.1:{}/postgres?sslmode=require",
        s.addr.port()
    );
    let o = std::process::Command::new("psql")
        .args(["-X", "-At", &uri, "-c", "SELECT 'over tls'"])
        .env("PGPASSWORD", &t)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "over tls");
    let plain = format!(
        "postgresql://x@127.0.0.1:{}/postgres?sslmode=disable",
        s.addr.port()
    );
    let o = std::process::Command::new("psql")
        .args(["-X", "-At", &plain, "-c", "SELECT 1"])
        .env("PGPASSWORD", &t)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("target `db` requires TLS"),
        "{}",
        stderr(&o)
    );
}

/// A listener that counts connections: proves nothing reached "upstream".
fn tripwire() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            c.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (addr, count)
}

fn read_error(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn bad_tokens_and_bad_bytes_never_reach_the_upstream() {
    let (trip, hits) = tripwire();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let addr = free_addr();
    let config = format!(
        "[gateway]\nshards = 2\n{}{}",
        keys.identity_block(),
        pg_target("db", addr, trip, "")
    );
    let _s = Sluice::start(&config);

    // Wrong token: 28P01.
    let err = refused(addr, "not-a-token", "postgres");
    assert_eq!(sqlstate(&err), "28P01", "{err}");
    let elsewhere = tempfile::tempdir().unwrap();
    let err = refused(
        addr,
        &Keys::new(elsewhere.path()).token("mallory", &["sre"]),
        "postgres",
    );
    assert_eq!(sqlstate(&err), "28P01", "{err}");
    // A valid token whose groups do not grant access: 28000.
    let err = refused(addr, &keys.token("bob", &["marketing"]), "postgres");
    assert_eq!(sqlstate(&err), "28000", "{err}");
    assert!(
        message(&err).contains("`bob` may not connect to target `db`"),
        "{err}"
    );

    // Garbage after SSLRequest: 08P01, before any handshake.
    let mut s = TcpStream::connect(addr).unwrap();
    // One write, so the bytes arrive together with the request (what an attacker
    // injecting plaintext before the handshake would do).
    s.write_all(b"\0\0\0\x08\x04\xd2\x16\x2f\0\0\0\x08garbage!")
        .unwrap();
    let reply = read_error(&mut s);
    assert!(
        reply.starts_with('E')
            || reply.starts_with("N") && reply[1..].starts_with('E')
            || reply.contains("08P01"),
        "{reply:?}"
    );
    assert!(
        reply.contains("received unencrypted data after SSL request"),
        "{reply:?}"
    );

    // GSSAPI encryption is declined with `N`; the client may then start normally.
    let mut g = TcpStream::connect(addr).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    g.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).unwrap();
    let mut answer = [0u8; 1];
    g.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"N");
    let mut startup = Vec::new();
    sluice_protocols::postgres::encode::startup_message(
        &mut startup,
        &[("user", "u"), ("database", "postgres")],
    );
    g.write_all(&startup).unwrap();
    let mut auth = [0u8; 9];
    g.read_exact(&mut auth).unwrap();
    assert_eq!(
        auth,
        [b'R', 0, 0, 0, 8, 0, 0, 0, 3],
        "asked for the token as a cleartext password"
    );

    // A startup packet claiming 1 GiB: 08P01.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&[0x40, 0, 0, 0, 0, 3, 0, 0]).unwrap();
    let reply = read_error(&mut s);
    assert!(
        reply.contains("08P01") && reply.contains("exceeds the limit"),
        "{reply:?}"
    );

    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
}

#[test]
fn oversized_message_is_refused_and_never_forwarded() {
    let s = setup_with("", "max_message = 65536");
    let t = s.keys.token("alice", &["sre"]);
    s.pg.psql("CREATE TABLE big (v text)");
    let mut c = connect(s.addr, &t, "postgres").unwrap();
    let huge = format!("INSERT INTO big VALUES ('{}')", "x".repeat(100_000));
    // The driver sees the session end (how it reports a FATAL that arrives while
    // it is still writing depends on its own timing) ...
    c.batch_execute(&huge).expect_err("refused");
    // ... and on the wire the gateway answers 08P01 naming the limit.
    let mut raw = RawPg::login(s.addr, &t);
    raw.send(&[b'Q', 0, 1, 0x86, 0xa5]); // a Query announcing 100005 bytes
    let msgs = raw.read_until(b'E');
    let (code, msg) = error_fields(&msgs.last().unwrap().1);
    assert_eq!(code, "08P01");
    assert!(msg.contains("exceeds the limit of 65536"), "{msg}");
    assert_eq!(s.pg.psql("SELECT count(*) FROM big"), "0");
    // A fresh session works.
    let mut c = connect(s.addr, &t, "postgres").unwrap();
    c.batch_execute("INSERT INTO big VALUES ('small')").unwrap();
    assert_eq!(s.pg.psql("SELECT count(*) FROM big"), "1");
}

#[test]
fn a_target_removed_by_reload_refuses_with_a_clear_error() {
    let s = setup();
    let t = s.keys.token("alice", &["sre"]);
    connect(s.addr, &t, "postgres").expect("works before the reload");
    let other = free_addr();
    let config = format!(
        "[gateway]\nshards = 2\n{}{}",
        s.keys.identity_block(),
        pg_target("other", other, s.pg.addr(), "")
    );
    s.sluice.rewrite_config(&config);
    s.sluice.signal(libc::SIGHUP);
    assert!(s.sluice.wait_log("event=reloaded", Duration::from_secs(10)));
    let err = refused(s.addr, &t, "postgres");
    assert_eq!(sqlstate(&err), "08004", "{err:?}");
    assert!(
        message(&err).contains("target `db` is no longer configured"),
        "{err}"
    );
}

fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.key_pair.serialize_pem());
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, &cert_pem).unwrap();
    std::fs::write(&k, &key_pem).unwrap();
    (c, k, cert_pem, key_pem)
}

#[test]
fn clients_can_verify_the_gateway_certificate_with_verify_full() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _, _) = self_signed(dir.path());
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let s = setup_with("", &tls);
    let t = s.keys.token("alice", &["sre"]);
    let uri = format!(
        "postgresql://x@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        s.addr.port(),
        cert.display()
    );
    let o = std::process::Command::new("psql")
        .args(["-X", "-At", &uri, "-c", "SELECT 'verified'"])
        .env("PGPASSWORD", &t)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "verified");
}

#[test]
fn upstream_tls_require_and_verify_never_downgrade() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, cert_pem, key_pem) = self_signed(dir.path());
    let pg = PgCluster::start_tls(&cert_pem, &key_pem);
    pg.prepend_hba("hostnossl all all 127.0.0.1/32 reject");
    let keys = Keys::new(dir.path());
    let (a, b, c) = (free_addr(), free_addr(), free_addr());
    let upstream = format!("localhost:{}", pg.port);
    let target = |name: &str, listen, extra: &str| {
        format!(
            "[[target]]\nname = \"{name}\"\nprotocol = \"postgres\"\nlisten = \"{listen}\"\nupstream = \"{upstream}\"\ncredentials = {{ user = \"postgres\" }}\naccess = [\"sre\"]\n{extra}\n"
        )
    };
    let config = format!(
        "[gateway]\nshards = 1\n{}{}{}{}",
        keys.identity_block(),
        target("require", a, "upstream_tls = \"require\""),
        target(
            "verify",
            b,
            &format!(
                "upstream_tls = \"verify\"\nupstream_ca = \"{}\"",
                cert.display()
            )
        ),
        target("plain", c, "")
    );
    let _s = Sluice::start(&config);
    let t = keys.token("alice", &["sre"]);
    for addr in [a, b] {
        let mut cl = connect(addr, &t, "postgres").expect("login over upstream TLS");
        let ssl: bool = cl
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(ssl, "the upstream connection is encrypted");
    }
    // Without upstream TLS the server refuses the plaintext connection, and
    // the client hears the server's own reason.
    let err = refused(c, &t, "postgres");
    assert_eq!(sqlstate(&err), "28000", "{err:?}");
    assert!(
        message(&err).contains("pg_hba.conf rejects connection"),
        "{err:?}"
    );
}
