//! Just-in-time approvals end to end: the real binary, a real PostgreSQL, psql and
//! the driver as requesters, approvers acting through the admin API and the CLI,
//! a local webhook receiver, and the audit log.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use sluice_protocols::postgres::encode;
use support::pg::*;
use support::*;

const RULES: &str = r#"
[guardrails.prod]
rules = [
  { kinds = ["drop"], action = "deny", message = "DROP is blocked" },
  { kinds = ["delete", "update"], action = "approve" },
]

[guardrails.why]
rules = [
  { kinds = ["delete"], action = "approve", reason = true },
]
"#;

struct Setup {
    pg: PgCluster,
    keys: Keys,
    sluice: Sluice,
    /// Wait mode, quorum 1.
    db: SocketAddr,
    /// No-wait mode (refuse at once; re-run once approved).
    nowait: SocketAddr,
    /// Quorum 2.
    quorum: SocketAddr,
    /// Requests time out after 2 s.
    fast: SocketAddr,
    /// Its rule needs the requester's reason.
    why: SocketAddr,
    admin: SocketAddr,
    hooks: Arc<Mutex<Vec<Value>>>,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let pg = PgCluster::start_with(&[], "-c log_statement=all");
    pg.psql(
        "CREATE TABLE orders (id int primary key, note text); \
         INSERT INTO orders SELECT g, 'n' FROM generate_series(1, 200) g",
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let (hook_addr, hooks) = webhook_receiver();
    let why = free_addr();
    let (db, nowait, quorum, fast, admin) = (
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
    );
    let audit = dir.path().join("audit");
    let up = pg.addr();
    let config = format!(
        "[gateway]\nshards = 2\nadmin = \"{admin}\"\n\
         {}admin_groups = [\"admins\"]\n\
         [audit]\ndir = \"{}\"\ndurability = \"strict\"\n\
         [approvals]\ntimeout = \"60s\"\ngrant_ttl = \"60s\"\nnotify = [\"http://{hook_addr}/sluice\"]\n\
         {}{}{}{}{}{RULES}",
        keys.identity_block(),
        audit.display(),
        pg_target("db", db, up, "guardrails = \"prod\"\napprovers = [\"dba\"]"),
        pg_target(
            "db_nowait",
            nowait,
            up,
            "guardrails = \"prod\"\napprovers = [\"dba\"]\napproval_mode = \"nowait\""
        ),
        pg_target(
            "db_quorum",
            quorum,
            up,
            "guardrails = \"prod\"\napprovers = [\"dba\"]\nquorum = 2"
        ),
        pg_target(
            "db_fast",
            fast,
            up,
            "guardrails = \"prod\"\napprovers = [\"dba\"]\napproval_timeout = \"2s\""
        ),
        pg_target("db_why", why, up, "guardrails = \"why\"\napprovers = [\"dba\"]"),
    );
    let sluice = Sluice::start(&config);
    Setup {
        pg,
        keys,
        sluice,
        db,
        nowait,
        quorum,
        fast,
        why,
        admin,
        hooks,
        _dir: dir,
    }
}

impl Setup {
    fn audit_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("audit")
    }

    /// An admin API call with `token`: `(status, JSON body)`.
    fn api(&self, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
        let (status, out) = http_exchange(self.admin, &api_request(method, path, token, body));
        (
            status,
            serde_json::from_str(response_body(&out)).unwrap_or(Value::Null),
        )
    }

    fn vote(&self, id: u64, action: &str, token: &str) -> (u16, Value) {
        self.api(
            "POST",
            &format!("/api/approvals/{id}/{action}"),
            token,
            r#"{"reason":"checked the ticket"}"#,
        )
    }

    fn request(&self, id: u64) -> Value {
        let (status, v) = self.api(
            "GET",
            &format!("/api/approvals/{id}"),
            &self.admin_token(),
            "",
        );
        assert_eq!(status, 200, "{v}");
        v
    }

    fn admin_token(&self) -> String {
        self.keys.token("root", &["admins"])
    }

    /// Waits for the newest pending request of `requester` on `target`.
    fn pending(&self, requester: &str, target: &str) -> Value {
        let token = self.admin_token();
        wait_for(Duration::from_secs(20), || {
            let (status, v) = self.api("GET", "/api/approvals?state=pending", &token, "");
            assert_eq!(status, 200, "{v}");
            v["approvals"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["requester"] == requester && r["target"] == target)
                .cloned()
        })
        .unwrap_or_else(|| panic!("no pending request by {requester} on {target}"))
    }

    fn hook_events(&self, id: u64) -> Vec<String> {
        self.hooks
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h["request"]["id"] == id)
            .map(|h| h["event"].as_str().unwrap().to_owned())
            .collect()
    }

    fn count(&self, sql: &str) -> String {
        self.pg.psql(sql)
    }
}

/// A local webhook endpoint: every JSON body POSTed to it is kept.
fn webhook_receiver() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Head, then Content-Length bytes of body.
            let body = loop {
                let Ok(n) = s.read(&mut chunk) else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break Some(body[..len].to_owned());
                    }
                }
            };
            if let Some(body) = body {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
            }
            let _ = s.write_all(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (addr, got)
}

/// Runs psql in the background; its output comes back through the handle.
fn psql_bg(addr: SocketAddr, token: &str, sql: &str) -> thread::JoinHandle<std::process::Output> {
    let (token, sql) = (token.to_owned(), sql.to_owned());
    thread::spawn(move || psql_with(addr, &token, &["-At", "-c", &sql]))
}

fn records(audit: &std::path::Path) -> Vec<Value> {
    let mut out = Vec::new();
    for seg in sluice::audit::chain::segments(audit).unwrap() {
        // A live strict segment ends in spaces filled ahead of the records.
        for line in std::fs::read_to_string(seg).unwrap().lines() {
            if !line.trim().is_empty() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
    }
    out
}

/// The approval records of request `id`, once there are at least `n`.
fn approval_records(s: &Setup, id: u64, n: usize) -> Vec<Value> {
    let read = || -> Vec<Value> {
        records(&s.audit_dir())
            .into_iter()
            .filter(|r| r["type"] == "approval" && r["approval"] == id)
            .collect()
    };
    // Records reach the disk within the writer's flush interval.
    wait_for(Duration::from_secs(5), || {
        let r = read();
        (r.len() >= n).then_some(r)
    })
    .unwrap_or_else(read)
}

#[test]
fn approved_statement_runs_and_only_an_eligible_second_person_may_approve() {
    let s = setup();
    // The requester is in the approver group too: that never lets them approve.
    let agent = s.keys.token("agent-7", &["agents", "dba"]);
    let waiting = psql_bg(s.db, &agent, "DELETE FROM orders WHERE id = 1 RETURNING id");
    let r = s.pending("agent-7", "db");
    let id = r["id"].as_u64().unwrap();
    assert_eq!(
        r["statement"],
        "DELETE FROM orders WHERE id = 1 RETURNING id"
    );
    assert_eq!(r["summary"], "DELETE");
    assert_eq!(r["approvers"], serde_json::json!(["dba"]));
    assert_eq!(r["quorum"], 1);
    assert_eq!(
        s.count("SELECT count(*) FROM orders WHERE id = 1"),
        "1",
        "not run while waiting"
    );

    // Self-approval: 403, even though agent-7 is in `dba`; admins get no exemption.
    let (status, v) = s.vote(id, "approve", &agent);
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("cannot decide on their own request"),
        "{v}"
    );
    // Someone outside the approver groups (even an admin): 403.
    let (status, v) = s.vote(id, "approve", &s.keys.token("eve", &["agents", "admins"]));
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not in an approver group"),
        "{v}"
    );
    // No token: 401.
    assert_eq!(s.vote(id, "approve", "not-a-token").0, 401);
    // The requester sees their own request; an unrelated caller does not.
    assert_eq!(
        s.api("GET", &format!("/api/approvals/{id}"), &agent, "").0,
        200
    );
    assert_eq!(
        s.api(
            "GET",
            &format!("/api/approvals/{id}"),
            &s.keys.token("zed", &["agents"]),
            ""
        )
        .0,
        404
    );
    assert_eq!(s.request(id)["state"], "pending");

    // An eligible second person approves through the CLI.
    let o = Command::new(sluice_bin())
        .args(["approvals", "approve", &id.to_string(), "--admin"])
        .arg(format!("http://{}", s.admin))
        .args(["--token", &s.keys.token("bob", &["dba"])])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("approval {id}: approved")
    );

    let out = waiting.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().next(),
        Some("1"),
        "the result reaches the requester"
    );
    assert!(
        stderr(&out).contains(&format!(
            "NOTICE:  approval {id} requested for DELETE on db; waiting up to 60s"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.count("SELECT count(*) FROM orders WHERE id = 1"), "0");
    // Decided: a later vote conflicts.
    assert_eq!(s.vote(id, "deny", &s.keys.token("carol", &["dba"])).0, 409);
    let r = s.request(id);
    assert_eq!(r["state"], "approved");
    assert_eq!(r["used"], true);
    assert_eq!(r["approvals"][0]["subject"], "bob");

    // The webhook heard the request and the decision.
    let events = wait_for(Duration::from_secs(10), || {
        let e = s.hook_events(id);
        (e.len() >= 3).then_some(e)
    })
    .unwrap_or_else(|| s.hook_events(id));
    assert_eq!(
        events,
        ["approval.requested", "approval.approved", "approval.used"],
        "webhook events"
    );
    let hooks = s.hooks.lock().unwrap();
    let approved = hooks
        .iter()
        .find(|h| h["request"]["id"] == id && h["event"] == "approval.approved")
        .unwrap();
    assert_eq!(approved["actor"], "bob");
    assert_eq!(approved["request"]["requester"], "agent-7");
    drop(hooks);

    // The audit log: who asked, who approved, the statement, and the command
    // that ran under the approval.
    let recs = approval_records(&s, id, 3);
    let actions: Vec<&str> = recs.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["requested", "approved", "used"]);
    assert_eq!(recs[0]["requester"], "agent-7");
    assert_eq!(
        recs[0]["text"],
        "DELETE FROM orders WHERE id = 1 RETURNING id"
    );
    assert_eq!(recs[0]["approvers"], serde_json::json!(["dba"]));
    assert_eq!(recs[1]["subject"], "bob");
    assert_eq!(recs[1]["approved_by"], serde_json::json!(["bob"]));
    assert_eq!(recs[1]["reason"], Value::Null, "the CLI sent no reason");
    let cmd = records(&s.audit_dir())
        .into_iter()
        .find(|r| r["type"] == "command" && r["approval"] == id)
        .expect("the command record names its approval");
    assert_eq!(cmd["decision"], "allow");
    assert_eq!(cmd["subject"], "agent-7");
    let o = Command::new(sluice_bin())
        .args(["audit", "verify", "--allow-open-tail", "--dir"])
        .arg(s.audit_dir())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn denied_and_timed_out_statements_never_reach_postgres() {
    let s = setup();
    let agent = s.keys.token("agent-9", &["agents"]);
    // The driver, extended protocol with a bound parameter.
    let (a, t) = (s.db, agent.clone());
    let waiting = thread::spawn(move || {
        let mut c = connect(a, &t, "postgres").unwrap();
        let r = c.execute(
            "DELETE FROM orders WHERE id = $1 AND note <> 'sluice-marker'",
            &[&2i32],
        );
        // The session stays usable after the refusal.
        let after: i64 = c
            .query_one("SELECT count(*) FROM orders WHERE id = 2", &[])
            .unwrap()
            .get(0);
        (r, after)
    });
    let r = s.pending("agent-9", "db");
    let id = r["id"].as_u64().unwrap();
    // The driver sends int4 in binary: the approver sees the bytes as sent.
    assert_eq!(
        r["params"],
        serde_json::json!(["\\x00000002"]),
        "the approver sees the Bind's parameters"
    );
    assert_eq!(r["database"], "postgres");
    let (status, v) = s.vote(id, "deny", &s.keys.token("carol", &["dba"]));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["request"]["state"], "denied");
    let (result, after) = waiting.join().unwrap();
    let e = result.expect_err("denied");
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(
        message(&e),
        format!("approval {id} for DELETE on db was denied by carol")
    );
    assert_eq!(after, 1, "the row is still there");
    // One deny is final.
    assert_eq!(s.vote(id, "approve", &s.keys.token("bob", &["dba"])).0, 409);

    // Timeout: nobody decides within 2 s.
    let o = psql_with(
        s.fast,
        &agent,
        &[
            "-c",
            "UPDATE orders SET note = 'sluice-marker' WHERE id = 3",
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("timed out after 2s without a decision"),
        "{err}"
    );
    let id2 = err
        .split("approval ")
        .nth(1)
        .and_then(|x| x.split_whitespace().next())
        .and_then(|x| x.parse::<u64>().ok())
        .unwrap();
    assert_eq!(s.request(id2)["state"], "expired");
    // An expired request cannot be approved.
    let (status, v) = s.vote(id2, "approve", &s.keys.token("bob", &["dba"]));
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");

    // Neither statement ever reached the server.
    let log = s.pg.log();
    assert!(
        log.contains("statement: CREATE TABLE orders"),
        "statement logging is on"
    );
    assert!(
        !log.contains("sluice-marker"),
        "a held statement reached PostgreSQL:\n{log}"
    );
    assert_eq!(s.count("SELECT note FROM orders WHERE id = 3"), "n");
    let actions: Vec<String> = approval_records(&s, id2, 2)
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["requested", "expired"]);
    let denied = approval_records(&s, id, 2);
    assert_eq!(denied[1]["action"], "denied");
    assert_eq!(denied[1]["subject"], "carol");
    assert_eq!(denied[1]["reason"], "checked the ticket");
}

#[test]
fn quorum_counts_distinct_people() {
    let s = setup();
    let agent = s.keys.token("agent-3", &["agents"]);
    let waiting = psql_bg(s.quorum, &agent, "DELETE FROM orders WHERE id = 10");
    let id = s.pending("agent-3", "db_quorum")["id"].as_u64().unwrap();
    let bob = s.keys.token("bob", &["dba"]);
    let (status, v) = s.vote(id, "approve", &bob);
    assert_eq!(
        (status, v["counted"].clone(), v["request"]["state"].clone()),
        (200, true.into(), "pending".into())
    );
    // The same person again counts once.
    let (status, v) = s.vote(id, "approve", &bob);
    assert_eq!(
        (status, v["counted"].clone(), v["request"]["state"].clone()),
        (200, false.into(), "pending".into())
    );
    assert_eq!(s.count("SELECT count(*) FROM orders WHERE id = 10"), "1");
    let (status, v) = s.vote(id, "approve", &s.keys.token("carol", &["dba"]));
    assert_eq!(
        (status, v["request"]["state"].clone()),
        (200, "approved".into())
    );
    let out = waiting.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "DELETE 1");
    assert_eq!(s.count("SELECT count(*) FROM orders WHERE id = 10"), "0");
    let recs = approval_records(&s, id, 4);
    let approved = recs.iter().find(|r| r["action"] == "approved").unwrap();
    assert_eq!(approved["approved_by"], serde_json::json!(["bob", "carol"]));
}

#[test]
fn grant_window_runs_the_exact_statement_once() {
    let s = setup();
    let agent = s.keys.token("agent-5", &["agents"]);
    let run = |sql: &str| psql_with(s.nowait, &agent, &["-At", "-c", sql]);
    let o = run("DELETE FROM orders WHERE id = 20");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(
            "requested for DELETE on db_nowait; run the same statement again once it is approved"
        ),
        "{}",
        stderr(&o)
    );
    let id = s.pending("agent-5", "db_nowait")["id"].as_u64().unwrap();
    // Re-running before the decision finds the same request, not a new one.
    let o = run("DELETE FROM orders WHERE id = 20");
    assert!(
        stderr(&o).contains(&format!("approval {id} requested")),
        "{}",
        stderr(&o)
    );
    assert_eq!(s.vote(id, "approve", &s.keys.token("bob", &["dba"])).0, 200);
    // Another person cannot use agent-5's approval.
    let o = psql_with(
        s.nowait,
        &s.keys.token("agent-6", &["agents"]),
        &["-At", "-c", "DELETE FROM orders WHERE id = 20"],
    );
    assert!(!o.status.success(), "someone else's approval");
    // An edited statement needs its own approval.
    let o = run("DELETE FROM orders WHERE id = 21");
    assert!(!o.status.success());
    assert!(
        !stderr(&o).contains(&format!("approval {id} ")),
        "{}",
        stderr(&o)
    );
    // The approved statement runs, once.
    let o = run("DELETE FROM orders WHERE id = 20");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "DELETE 1");
    let o = run("DELETE FROM orders WHERE id = 20");
    assert!(!o.status.success(), "a grant is used once");
    assert!(
        stderr(&o).contains("requested for DELETE"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains(&format!("approval {id} ")),
        "a new request"
    );
    assert_eq!(s.request(id)["used"], true);
}

#[test]
fn client_disconnect_cancels_and_waiting_sessions_do_not_hold_the_shard() {
    let s = setup();
    let agent = s.keys.token("agent-1", &["agents"]);
    let mut child = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p"])
        .arg(s.db.port().to_string())
        .args([
            "-U",
            "x",
            "-d",
            "postgres",
            "-c",
            "DELETE FROM orders WHERE id = 30",
        ])
        .env("PGPASSWORD", &agent)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = s.pending("agent-1", "db")["id"].as_u64().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let state = wait_for(Duration::from_secs(10), || {
        let st = s.request(id)["state"].as_str().unwrap().to_owned();
        (st != "pending").then_some(st)
    });
    assert_eq!(state.as_deref(), Some("cancelled"));
    assert_eq!(s.vote(id, "approve", &s.keys.token("bob", &["dba"])).0, 409);
    assert_eq!(s.count("SELECT count(*) FROM orders WHERE id = 30"), "1");

    // 100 sessions wait at once (raw protocol, both shards)...
    let mut waiters: Vec<RawPg> = (0..100)
        .map(|i| {
            let mut c = RawPg::login(s.db, &s.keys.token(&format!("fleet-{i}"), &["agents"]));
            let mut q = Vec::new();
            encode::query(
                &mut q,
                format!("DELETE FROM orders WHERE id = {}", 100 + i).as_bytes(),
            );
            c.send(&q);
            c
        })
        .collect();
    let token = s.admin_token();
    let all = wait_for(Duration::from_secs(30), || {
        let (_, v) = s.api("GET", "/api/approvals?state=pending", &token, "");
        let n = v["approvals"].as_array().unwrap().len();
        (n == 100).then_some(n)
    });
    assert_eq!(all, Some(100), "every waiting session opened a request");
    // ... while other sessions' queries all complete, on both shards.
    let mut done = 0;
    for i in 0..8 {
        let mut c = connect(
            s.db,
            &s.keys.token(&format!("reader-{i}"), &["agents"]),
            "postgres",
        )
        .unwrap();
        for _ in 0..25 {
            let n: i64 = c
                .query_one("SELECT count(*) FROM orders", &[])
                .unwrap()
                .get(0);
            assert_eq!(n, 200);
            done += 1;
        }
    }
    assert_eq!(done, 200);
    // Deny them all; each waiting session gets its own refusal.
    let carol = s.keys.token("carol", &["dba"]);
    let (_, v) = s.api("GET", "/api/approvals?state=pending", &token, "");
    for r in v["approvals"].as_array().unwrap() {
        assert_eq!(s.vote(r["id"].as_u64().unwrap(), "deny", &carol).0, 200);
    }
    for c in &mut waiters {
        let msgs = c.read_until(b'Z');
        let (code, msg) = msgs
            .iter()
            .find(|(t, _)| *t == b'E')
            .map(|(_, b)| error_fields(b))
            .expect("an error");
        assert_eq!(code, "42501");
        assert!(msg.ends_with("was denied by carol"), "{msg}");
    }
    assert_eq!(s.count("SELECT count(*) FROM orders"), "200");
    drop(s.sluice);
}

/// Extended-protocol messages the driver does not let a test send as it likes.
fn msg(tag: u8, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    encode::message(&mut out, tag, body);
    out
}

fn parse_msg(name: &str, sql: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode::parse(&mut out, name.as_bytes(), sql.as_bytes(), &[]);
    out
}

fn bind_execute_sync(statement: &str, param: &str) -> Vec<u8> {
    let mut out = msg(b'B', |o| {
        o.push(0); // unnamed portal
        o.extend_from_slice(statement.as_bytes());
        o.push(0);
        o.extend_from_slice(&0u16.to_be_bytes()); // text formats
        o.extend_from_slice(&1u16.to_be_bytes());
        o.extend_from_slice(&(param.len() as i32).to_be_bytes());
        o.extend_from_slice(param.as_bytes());
        o.extend_from_slice(&0u16.to_be_bytes());
    });
    out.extend(msg(b'E', |o| {
        o.push(0);
        o.extend_from_slice(&0i32.to_be_bytes());
    }));
    out.extend(sync());
    out
}

fn sync() -> Vec<u8> {
    msg(b'S', |_| {})
}

fn close_statement(name: &str) -> Vec<u8> {
    msg(b'C', |o| {
        o.push(b'S');
        o.extend_from_slice(name.as_bytes());
        o.push(0);
    })
}

/// The first error (code, message) among `msgs`.
fn first_error(msgs: &[(u8, Vec<u8>)]) -> Option<(String, String)> {
    msgs.iter()
        .find(|(t, _)| *t == b'E')
        .map(|(_, b)| error_fields(b))
}

#[test]
fn extended_protocol_cannot_swap_reuse_or_escape_a_gated_statement() {
    let s = setup();
    let requester = "agent-x";
    let mut c = RawPg::login(s.db, &s.keys.token(requester, &["agents"]));
    let carol = s.keys.token("carol", &["dba"]);
    // A held Bind is refused by the approver; returns the refusal seen.
    let deny_held = |c: &mut RawPg, expect_text: &str| -> (String, String) {
        let r = s.pending(requester, "db");
        assert!(
            r["statement"].as_str().unwrap().contains(expect_text),
            "{r}"
        );
        assert_eq!(s.vote(r["id"].as_u64().unwrap(), "deny", &carol).0, 200);
        first_error(&c.read_until(b'Z')).expect("refused")
    };

    // Prepare a DELETE (parsing runs nothing), then try to swap the name's text.
    let mut m = parse_msg("s", "DELETE FROM orders WHERE id = $1");
    m.extend(sync());
    c.send(&m);
    assert!(first_error(&c.read_until(b'Z')).is_none());
    let mut m = parse_msg("s", "SELECT 1");
    m.extend(sync());
    c.send(&m);
    let (code, _) =
        first_error(&c.read_until(b'Z')).expect("the server refuses a second Parse of `s`");
    assert_eq!(code, "42P05");
    // `s` is still the DELETE on the server: its Bind is held, showing the DELETE.
    c.send(&bind_execute_sync("s", "40"));
    let (code, msg) = deny_held(&mut c, "DELETE FROM orders WHERE id = $1");
    assert_eq!(code, "42501", "{msg}");

    // A Close that the server skips (after an error in its pipeline) changes nothing.
    let mut m = parse_msg("bad", "SELEC nonsense");
    m.extend(close_statement("s"));
    m.extend(sync());
    c.send(&m);
    assert_eq!(first_error(&c.read_until(b'Z')).unwrap().0, "42601");
    c.send(&bind_execute_sync("s", "41"));
    let (code, _) = deny_held(&mut c, "DELETE FROM orders WHERE id = $1");
    assert_eq!(code, "42501");

    // SQL EXECUTE of the gated statement, and SQL PREPARE of a held kind, are refused.
    for (sql, want) in [
        (
            "EXECUTE s(42)",
            "SQL EXECUTE is not allowed while prepared statements await approval",
        ),
        (
            "PREPARE p AS DELETE FROM orders WHERE id = 43",
            "cannot be prepared with SQL PREPARE",
        ),
    ] {
        let mut q = Vec::new();
        encode::query(&mut q, sql.as_bytes());
        c.send(&q);
        let (code, msg) = first_error(&c.read_until(b'Z')).expect("refused");
        assert_eq!(code, "42501", "{sql}");
        assert!(msg.contains(want), "{sql}: {msg}");
    }

    // A confirmed Close frees the name: a new plain statement runs as usual.
    let mut m = close_statement("s");
    m.extend(sync());
    c.send(&m);
    assert!(first_error(&c.read_until(b'Z')).is_none());
    let mut m = parse_msg("s", "SELECT count(*) FROM orders WHERE id = $1");
    m.extend(bind_execute_sync("s", "40"));
    c.send(&m);
    let msgs = c.read_until(b'Z');
    assert!(first_error(&msgs).is_none(), "{msgs:?}");
    assert!(msgs.iter().any(|(t, _)| *t == b'D'));
    assert_eq!(
        s.count("SELECT count(*) FROM orders WHERE id IN (40, 41, 42, 43)"),
        "4"
    );
    // Every held Bind is in the audit log as a command of its own.
    let binds = records(&s.audit_dir())
        .into_iter()
        .filter(|r| r["type"] == "command" && r["message"] == "bind" && r["subject"] == requester)
        .count();
    assert_eq!(binds, 2);
}

#[test]
fn a_cancel_request_ends_the_wait() {
    let s = setup();
    let agent = s.keys.token("agent-c", &["agents"]);
    let mut c = connect(s.db, &agent, "postgres").unwrap();
    let cancel = c.cancel_token();
    let waiting = thread::spawn(move || c.batch_execute("DELETE FROM orders WHERE id = 50"));
    let id = s.pending("agent-c", "db")["id"].as_u64().unwrap();
    cancel.cancel_query(postgres::NoTls).unwrap();
    let e = waiting.join().unwrap().expect_err("cancelled");
    assert_eq!(sqlstate(&e), "57014");
    assert_eq!(s.request(id)["state"], "cancelled");
    assert_eq!(s.count("SELECT count(*) FROM orders WHERE id = 50"), "1");
}

/// A rule with `reason = true` opens no request without the requester's
/// reason; the reason (`SET sluice.reason`, or the startup option) travels with
/// the request to approvers and into the audit log, and never reaches the server.
#[test]
fn a_reason_travels_with_the_request_and_a_rule_can_require_one() {
    let s = setup();
    let agent = s.keys.token("agent-r", &["agents"]);
    // No reason: refused at once, saying how to give one; nothing opened.
    let o = psql_with(s.why, &agent, &["-c", "DELETE FROM orders WHERE id = 20"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("needs approval with a reason"), "{err}");
    assert!(err.contains("SET sluice.reason"), "{err}");
    // A SET smuggled in with other statements is not read as the reason.
    let o = psql_with(
        s.why,
        &agent,
        &[
            "-c",
            "SET sluice.reason = 'x'; DELETE FROM orders WHERE id = 20",
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("needs approval with a reason"),
        "{}",
        stderr(&o)
    );
    assert_eq!(s.count("SELECT count(*) FROM orders WHERE id = 20"), "1");

    let (status, v) = s.api("GET", "/api/approvals?state=pending", &s.admin_token(), "");
    assert_eq!(status, 200);
    assert!(
        v["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["requester"] != "agent-r"),
        "nothing opened without a reason: {v}"
    );

    // `SET sluice.reason` on its own, then the statement: held with the reason.
    let token = agent.clone();
    let addr = s.why;
    let held = thread::spawn(move || {
        let mut c = connect(addr, &token, "postgres").unwrap();
        c.batch_execute("SET sluice.reason = 'INC-7: remove the duplicate order'")
            .unwrap();
        c.batch_execute("DELETE FROM orders WHERE id = 20")
    });
    let r = s.pending("agent-r", "db_why");
    assert_eq!(
        r["justification"], "INC-7: remove the duplicate order",
        "{r}"
    );
    let id = r["id"].as_u64().unwrap();
    assert_eq!(s.vote(id, "approve", &s.keys.token("bob", &["dba"])).0, 200);
    held.join().unwrap().expect("approved, it runs");
    assert_eq!(s.count("SELECT count(*) FROM orders WHERE id = 20"), "0");
    let recs = approval_records(&s, id, 3);
    assert!(
        recs.iter()
            .all(|r| r["justification"] == "INC-7: remove the duplicate order"),
        "{recs:?}"
    );

    // The startup option works too, and the server never sees the setting.
    let held = thread::spawn({
        let token = agent.clone();
        move || {
            psql_with_env(
                addr,
                &token,
                &[("PGOPTIONS", "-c sluice.reason=from-the-login")],
                &["-c", "DELETE FROM orders WHERE id = 21"],
            )
        }
    });
    let r = s.pending("agent-r", "db_why");
    assert_eq!(r["justification"], "from-the-login", "{r}");
    let id = r["id"].as_u64().unwrap();
    assert_eq!(s.vote(id, "deny", &s.keys.token("bob", &["dba"])).0, 200);
    let o = held.join().unwrap();
    assert!(stderr(&o).contains("was denied by bob"), "{}", stderr(&o));
    let o = psql_with_env(
        addr,
        &agent,
        &[("PGOPTIONS", "-c sluice.reason=from-the-login")],
        &["-c", "SHOW sluice.reason"],
    );
    assert!(
        stderr(&o).contains("unrecognized configuration parameter \"sluice.reason\""),
        "the server never saw it: {} {}",
        stdout(&o),
        stderr(&o)
    );
}
