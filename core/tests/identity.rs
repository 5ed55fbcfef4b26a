//! Token validation end to end: the real binary, a real PostgreSQL, and every
//! refusal class of the identity issue; JWKS rotation over HTTP; policy reload.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{json, Value};
use sluice::identity::token::DevKey;
use support::pg::*;
use support::*;

fn claims(sub: &str) -> Value {
    let now = sluice::identity::unix_now();
    json!({"iss": ISSUER, "aud": "sluice", "sub": sub, "groups": ["sre"],
           "iat": now, "nbf": now, "exp": now + 600})
}

fn with(mut c: Value, k: &str, v: Value) -> Value {
    c[k] = v;
    c
}

fn unsigned(header: Value, payload: &Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        B64URL.encode(header.to_string()),
        B64URL.encode(payload.to_string())
    )
}

#[test]
fn every_bad_token_is_refused_with_28p01_and_a_clear_reason() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let addr = free_addr();
    let audit = dir.path().join("audit");
    let config = format!(
        "[gateway]\nshards = 2\n{}[audit]\ndir = \"{}\"\n\n{}",
        keys.identity_block(),
        audit.display(),
        pg_target("db", addr, pg.addr(), "")
    );
    let mut sluice = Sluice::start(&config);
    let k = &keys.key;
    let now = sluice::identity::unix_now();

    // The valid token connects.
    let mut c =
        connect(addr, &k.sign(&claims("alice")), "postgres").expect("a valid token connects");
    assert_eq!(c.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);

    let good = k.sign(&claims("alice"));
    let parts: Vec<&str> = good.split('.').collect();
    let hs256_with_public_key = {
        let secret = k.jwk()["x"].as_str().unwrap().to_owned();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(k.kid.clone());
        jsonwebtoken::encode(
            &h,
            &claims("alice"),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let stranger = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg=none",
            unsigned(json!({"alg": "none", "typ": "JWT"}), &claims("alice"), ""),
            "algorithm",
        ),
        (
            "HS256 with the public key as secret",
            hs256_with_public_key,
            "algorithm HS256 is not accepted",
        ),
        (
            "wrong iss",
            k.sign(&with(
                claims("alice"),
                "iss",
                json!("https://evil.example/"),
            )),
            "issuer",
        ),
        (
            "wrong aud",
            k.sign(&with(claims("alice"), "aud", json!("other"))),
            "audience",
        ),
        (
            "expired",
            k.sign(&with(claims("alice"), "exp", json!(now - 3600))),
            "expired",
        ),
        (
            "nbf in the future",
            k.sign(&with(claims("alice"), "nbf", json!(now + 3600))),
            "not valid yet",
        ),
        (
            "string exp",
            k.sign(&with(
                claims("alice"),
                "exp",
                json!((now + 600).to_string()),
            )),
            "`exp` claim",
        ),
        (
            "unknown kid",
            Keys::new(stranger.path()).token("mallory", &["sre"]),
            "is not in the JWKS",
        ),
        (
            "jku header",
            format!(
                "{}.{}.{}",
                B64URL.encode(
                    json!({"alg": "EdDSA", "kid": k.kid, "jku": "https://evil.example/jwks"})
                        .to_string()
                ),
                parts[1],
                parts[2]
            ),
            "`jku` is not accepted",
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                B64URL.encode(with(claims("alice"), "sub", json!("root")).to_string()),
                parts[2]
            ),
            "signature is invalid",
        ),
    ];
    for (name, token, reason) in &cases {
        let err = refused(addr, token, "postgres");
        assert_eq!(sqlstate(&err), "28P01", "{name}: {err:?}");
        assert!(message(&err).contains(reason), "{name}: {}", message(&err));
    }
    // Groups that do not grant access: 28000.
    let err = refused(
        addr,
        &k.sign(&with(claims("bob"), "groups", json!(["marketing"]))),
        "postgres",
    );
    assert_eq!(sqlstate(&err), "28000", "{err:?}");
    // Each refusal is logged with its reason (the audit log records them once it lands).
    // The harness reads the gateway's stderr on its own thread: wait for the last line.
    assert!(sluice.wait_log(
        "event=access_denied target=db subject=bob",
        Duration::from_secs(10)
    ));
    let logs = sluice.logs();
    assert_eq!(
        logs.matches("event=auth_failed").count(),
        cases.len(),
        "{logs}"
    );
    assert!(logs.contains("event=access_denied target=db subject=bob"));
    // The unknown kid asked the JWKS store for a refresh first.
    assert!(logs.contains("is not in the JWKS"));
    // And every refusal is in the audit log.
    drop(c);
    sluice.signal(libc::SIGTERM);
    assert_eq!(
        sluice
            .wait_exit(Duration::from_secs(20))
            .and_then(|s| s.code()),
        Some(0)
    );
    let out = std::process::Command::new(sluice_bin())
        .args([
            "audit",
            "search",
            "--dir",
            audit.to_str().unwrap(),
            "--type",
            "auth_failure",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), cases.len(), "{text}");
    for (_, _, reason) in &cases {
        assert!(text.contains(reason), "audit lacks {reason}: {text}");
    }
    let out = std::process::Command::new(sluice_bin())
        .args([
            "audit",
            "search",
            "--dir",
            audit.to_str().unwrap(),
            "--type",
            "access_denied",
            "--user",
            "bob",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

/// A JWKS over HTTP whose document the test can swap.
fn jwks_server(doc: Arc<Mutex<String>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = doc.lock().unwrap().clone();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn jwks_rotation_over_http_without_restart() {
    let pg = PgCluster::start();
    let old = DevKey::generate();
    let new = DevKey::generate();
    let doc = Arc::new(Mutex::new(json!({"keys": [old.jwk()]}).to_string()));
    let jwks = jwks_server(doc.clone());
    let addr = free_addr();
    let config = format!(
        "[gateway]\nshards = 2\n[identity]\nissuer = \"{ISSUER}\"\naudience = \"sluice\"\njwks = \"http://{jwks}/jwks.json\"\njwks_refresh = \"1s\"\n\n{}",
        pg_target("db", addr, pg.addr(), "")
    );
    let sluice = Sluice::start(&config);
    connect(addr, &old.sign(&claims("alice")), "postgres").expect("old key works");
    let err = refused(addr, &new.sign(&claims("alice")), "postgres");
    assert!(
        message(&err).contains("is not in the JWKS"),
        "{}",
        message(&err)
    );

    // Rotate: both keys published; the new kid is accepted without a restart.
    *doc.lock().unwrap() = json!({"keys": [old.jwk(), new.jwk()]}).to_string();
    let ok = wait_for(Duration::from_secs(10), || {
        connect(addr, &new.sign(&claims("alice")), "postgres").ok()
    });
    assert!(ok.is_some(), "new kid accepted after rotation");
    // Retire the old key: refused once the cache refreshes (cached tokens too).
    let old_token = old.sign(&claims("alice"));
    connect(addr, &old_token, "postgres").expect("still valid before retirement");
    *doc.lock().unwrap() = json!({"keys": [new.jwk()]}).to_string();
    let gone = wait_for(Duration::from_secs(10), || {
        connect(addr, &old_token, "postgres").err()
    });
    assert!(gone.is_some(), "removed key refused after refresh");
    assert!(sluice.logs().contains("event=jwks_refreshed"));
}

#[test]
fn policy_reload_applies_to_open_sessions_and_broken_config_keeps_the_old() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let addr = free_addr();
    let config = |rules: &str| {
        format!(
            "[gateway]\nshards = 1\n{}{}[guardrails.g]\nrules = [{rules}]\n",
            keys.identity_block(),
            pg_target("db", addr, pg.addr(), "guardrails = \"g\"")
        )
    };
    let sluice = Sluice::start(&config(
        r#"{ kinds = ["drop"], action = "deny", message = "no drops" }"#,
    ));
    pg.psql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)");
    let mut c = connect(addr, &keys.token("alice", &["sre"]), "postgres").unwrap();
    c.execute("DELETE FROM t WHERE id = 1", &[])
        .expect("delete allowed at first");

    sluice.rewrite_config(&config(
        r#"{ kinds = ["delete"], action = "deny", message = "deletes are frozen" }"#,
    ));
    sluice.signal(libc::SIGHUP);
    assert!(sluice.wait_log("event=reloaded", Duration::from_secs(10)));
    let err = c
        .execute("DELETE FROM t WHERE id = 2", &[])
        .expect_err("denied after reload");
    assert_eq!(sqlstate(&err), "42501");
    assert_eq!(message(&err), "deletes are frozen");
    assert_eq!(
        pg.psql("SELECT count(*) FROM t"),
        "9",
        "the second delete never ran"
    );

    // A broken file: the running policy stays.
    sluice.rewrite_config(&config(r#"{ kinds = ["dlete"], action = "deny" }"#));
    sluice.signal(libc::SIGHUP);
    assert!(sluice.wait_log("event=reload_failed", Duration::from_secs(10)));
    assert!(sluice.logs().contains("unknown statement kind `dlete`"));
    let err = c
        .execute("DELETE FROM t WHERE id = 3", &[])
        .expect_err("still denied");
    assert_eq!(message(&err), "deletes are frozen");
    c.execute("UPDATE t SET id = id WHERE id = 4", &[])
        .expect("session still up");
}

/// Taking a group off a target's `access` ends what its open sessions may
/// do: their next statement is refused, not only their next login.
#[test]
fn access_withdrawn_by_a_reload_stops_open_sessions() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let addr = free_addr();
    let config = |access: &str| {
        let target = pg_target("db", addr, pg.addr(), "").replace(
            "access = [\"sre\", \"agents\"]",
            &format!("access = [{access}]"),
        );
        format!("[gateway]\nshards = 1\n{}{target}", keys.identity_block())
    };
    let sluice = Sluice::start(&config(r#""sre", "agents""#));
    pg.psql("CREATE TABLE w (id int); INSERT INTO w VALUES (1), (2)");
    let mut c = connect(addr, &keys.token("alice", &["sre"]), "postgres").unwrap();
    c.execute("DELETE FROM w WHERE id = 1", &[])
        .expect("allowed at first");

    sluice.rewrite_config(&config(r#""agents""#));
    sluice.signal(libc::SIGHUP);
    assert!(sluice.wait_log("event=reloaded", Duration::from_secs(10)));
    let err = c
        .execute("DELETE FROM w WHERE id = 2", &[])
        .expect_err("refused once access is withdrawn");
    assert_eq!(sqlstate(&err), "42501");
    assert_eq!(message(&err), "access to target `db` was withdrawn");
    assert_eq!(
        pg.psql("SELECT count(*) FROM w"),
        "1",
        "the second delete never ran"
    );
    // New logins are refused too.
    assert!(connect(addr, &keys.token("alice", &["sre"]), "postgres").is_err());
}

#[test]
fn admin_reload_needs_an_admin_token_and_reports_errors() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let (addr, admin) = (free_addr(), free_addr());
    let config = |msg: &str| {
        format!(
            "[gateway]\nshards = 2\nadmin = \"{admin}\"\n{}admin_groups = [\"platform\"]\n\n{}[guardrails.g]\nrules = [{{ kinds = [\"drop\"], action = \"deny\", message = \"{msg}\" }}]\n",
            keys.identity_block(),
            pg_target("db", addr, pg.addr(), "guardrails = \"g\"")
        )
    };
    let sluice = Sluice::start(&config("first"));
    let post = |token: Option<&str>| {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request =
            format!("POST /api/reload HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n");
        http_exchange(admin, &request).1
    };
    assert!(post(None).starts_with("HTTP/1.1 401"), "no token");
    assert!(post(Some("garbage")).starts_with("HTTP/1.1 401"));
    let not_admin = post(Some(&keys.token("alice", &["sre"])));
    assert!(
        not_admin.starts_with("HTTP/1.1 403") && not_admin.contains("not in an admin group"),
        "{not_admin}"
    );
    let admin_token = keys.token("root", &["platform"]);

    sluice.rewrite_config(&config("second"));
    let ok = post(Some(&admin_token));
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with(r#"{"status":"reloaded"}"#),
        "{ok}"
    );
    let mut c = connect(addr, &keys.token("alice", &["sre"]), "postgres").unwrap();
    assert_eq!(
        message(&c.batch_execute("DROP TABLE x").unwrap_err()),
        "second"
    );

    sluice.rewrite_config("[gateway]\nshards = \"x\"\n");
    let bad = post(Some(&admin_token));
    assert!(
        bad.starts_with("HTTP/1.1 422") && bad.contains("wrong type"),
        "{bad}"
    );
    assert_eq!(
        message(&c.batch_execute("DROP TABLE x").unwrap_err()),
        "second",
        "old policy kept"
    );
}

#[test]
fn jwks_from_oidc_discovery() {
    let pg = PgCluster::start();
    let key = DevKey::generate();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let idp = l.local_addr().unwrap();
    let issuer = format!("http://{idp}/realms/test");
    let jwks = key.jwks().to_string();
    let discovery =
        json!({ "issuer": issuer, "jwks_uri": format!("http://{idp}/realms/test/certs") })
            .to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let body = if req.starts_with("GET /realms/test/.well-known/openid-configuration ") {
                &discovery
            } else if req.starts_with("GET /realms/test/certs ") {
                &jwks
            } else {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                continue;
            };
            let _ = write!(s, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
        }
    });
    let addr = free_addr();
    let config = format!(
        "[gateway]\nshards = 1\n[identity]\nissuer = \"{issuer}\"\naudience = \"sluice\"\ngroups_claim = \"realm_access.roles\"\n\n{}",
        pg_target("db", addr, pg.addr(), "")
    );
    let _s = Sluice::start(&config);
    let now = sluice::identity::unix_now();
    let token = key.sign(
        &json!({"iss": issuer, "aud": ["account", "sluice"], "sub": "kc-user",
        "realm_access": {"roles": ["sre"]}, "iat": now, "exp": now + 300}),
    );
    let mut c = connect(addr, &token, "postgres")
        .expect("keys found through discovery; groups from a dotted claim");
    assert_eq!(c.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);
}
