//! Several gateway instances as one (`[state]` in PostgreSQL), end to end: the
//! real binary run two or three times over one state store, a separate
//! throw-away PostgreSQL as the target, psql and the driver as requesters,
//! approvers acting through any instance's admin API.
//!
//! - A statement held on one instance is decided through another, and released
//!   at once (LISTEN/NOTIFY).
//! - Quorum counts people, not votes, across instances.
//! - An approve and a deny racing on two instances: one wins, the statement
//!   runs at most once.
//! - A grant is used once, whichever instances the re-runs reach.
//! - A killed instance's held request is abandoned after its lease; a restart
//!   never reuses an id.
//! - A store outage: held statements keep waiting, `/healthz` says degraded,
//!   new requests are refused, plain statements go on; after it, the held
//!   statement is approved and runs.
//! - Audit checkpoints are anchored in the store (`audit verify --anchor`), and
//!   `audit search` merges several instances' logs.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::pg::*;
use support::*;

const RULES: &str = r#"
[guardrails.prod]
rules = [
  { kinds = ["drop"], action = "deny", message = "DROP is blocked" },
  { kinds = ["delete", "update"], action = "approve" },
]
"#;

const NAMES: [&str; 3] = ["gw-a", "gw-b", "gw-c"];

const REASON: &str = r#"{"reason":"checked the ticket"}"#;

/// One running instance.
struct Gw {
    name: &'static str,
    sluice: Sluice,
    /// Its config, to start it again after a kill.
    config: String,
    /// Wait mode, quorum 1.
    db: SocketAddr,
    /// No-wait mode: refused at once, re-run once approved (a grant).
    nowait: SocketAddr,
    /// Wait mode, quorum 2.
    quorum: SocketAddr,
    admin: SocketAddr,
    /// Its own audit log directory (with `Opts::audit`).
    audit: Option<PathBuf>,
}

#[derive(Default)]
struct Opts {
    /// `[state] lease` (None: the default).
    lease: Option<&'static str>,
    /// Give every instance an `[audit]` log of its own.
    audit: bool,
    /// Start the instances at the same time (they create the schema together).
    parallel: bool,
    /// Reach the store through this proxy.
    proxy: Option<Arc<Blackhole>>,
    /// `[approvals] timeout` (None: 60s).
    timeout: Option<&'static str>,
}

/// Instances over one state store, in front of one target. The instances are
/// dropped (killed) first.
struct Cluster {
    gws: Vec<Gw>,
    /// The database behind every instance's targets.
    target: PgCluster,
    /// The `[state]` store.
    state: PgCluster,
    keys: Keys,
    admin_token: String,
    _dir: tempfile::TempDir,
}

/// The `[state] postgres` connection string (also `audit verify --anchor`'s).
fn conninfo(state: &PgCluster) -> String {
    format!(
        "host=127.0.0.1 port={} dbname=postgres user=postgres connect_timeout=5",
        state.port
    )
}

fn cluster(n: usize, opts: Opts) -> Cluster {
    let target = PgCluster::start();
    target.psql(
        "CREATE TABLE orders (id int primary key, note text); \
         INSERT INTO orders SELECT g, 'n' FROM generate_series(1, 200) g; \
         CREATE TABLE counters (id int primary key, n int not null); \
         INSERT INTO counters SELECT g, 0 FROM generate_series(1, 200) g",
    );
    let state = PgCluster::start();
    if let Some(proxy) = &opts.proxy {
        proxy
            .upstream
            .store(state.port, std::sync::atomic::Ordering::SeqCst);
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let up = target.addr();
    let mut plans = Vec::new();
    for name in NAMES.iter().take(n) {
        let (db, nowait, quorum, admin) = (free_addr(), free_addr(), free_addr(), free_addr());
        let audit = opts.audit.then(|| dir.path().join(format!("audit-{name}")));
        let audit_block = audit.as_ref().map_or(String::new(), |a| {
            format!(
                "[audit]\ndir = \"{}\"\ndurability = \"strict\"\ncheckpoint_every = 5\ncheckpoint_interval = \"1s\"\n",
                a.display()
            )
        });
        let timeout = opts.timeout.unwrap_or("60s");
        let lease = opts
            .lease
            .map_or(String::new(), |l| format!("lease = \"{l}\"\n"));
        let config = format!(
            "[gateway]\nshards = 2\nadmin = \"{admin}\"\n\
             {}admin_groups = [\"admins\"]\n\
             [state]\npostgres = \"{}\"\ninstance = \"{name}\"\n{lease}\
             {audit_block}\
             [approvals]\ntimeout = \"{timeout}\"\ngrant_ttl = \"60s\"\n\
             {}{}{}{RULES}",
            keys.identity_block(),
            match &opts.proxy {
                Some(proxy) => conninfo(&state).replace(
                    &format!("port={}", state.port),
                    &format!("port={}", proxy.port),
                ),
                None => conninfo(&state),
            },
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
        );
        plans.push((*name, config, db, nowait, quorum, admin, audit));
    }
    let sluices: Vec<Sluice> = if opts.parallel {
        let starting: Vec<_> = plans
            .iter()
            .map(|p| {
                let config = p.1.clone();
                thread::spawn(move || Sluice::start(&config))
            })
            .collect();
        starting
            .into_iter()
            .map(|h| h.join().expect("an instance did not start (see above)"))
            .collect()
    } else {
        plans.iter().map(|p| Sluice::start(&p.1)).collect()
    };
    let gws = plans
        .into_iter()
        .zip(sluices)
        .map(
            |((name, config, db, nowait, quorum, admin, audit), sluice)| Gw {
                name,
                sluice,
                config,
                db,
                nowait,
                quorum,
                admin,
                audit,
            },
        )
        .collect();
    let admin_token = keys.token("root", &["admins"]);
    let c = Cluster {
        gws,
        target,
        state,
        keys,
        admin_token,
        _dir: dir,
    };
    // Each instance connects to the store (and migrates it) after it is
    // ready: wait until every one says it reaches it.
    for i in 0..c.gws.len() {
        c.wait_healthy(i);
    }
    c
}

/// An admin API call: `(status, JSON body)`, or why it got no answer.
fn try_api(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Result<(u16, Value), String> {
    let (status, out) = try_http_exchange(admin, &api_request(method, path, token, body))?;
    Ok((
        status,
        serde_json::from_str(response_body(&out)).unwrap_or(Value::Null),
    ))
}

impl Cluster {
    fn api(&self, i: usize, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
        try_api(self.gws[i].admin, method, path, token, body)
            .unwrap_or_else(|e| panic!("admin API of {}: {e}", self.gws[i].name))
    }

    fn approver(&self, who: &str) -> String {
        self.keys.token(who, &["dba"])
    }

    /// `who` (in the approvers' group) votes through instance `i`.
    fn vote(&self, i: usize, id: u64, action: &str, who: &str) -> (u16, Value) {
        self.api(
            i,
            "POST",
            &format!("/api/approvals/{id}/{action}"),
            &self.approver(who),
            REASON,
        )
    }

    /// Request `id` as instance `i` shows it.
    fn request(&self, i: usize, id: u64) -> Value {
        let (status, v) = self.api(
            i,
            "GET",
            &format!("/api/approvals/{id}"),
            &self.admin_token,
            "",
        );
        assert_eq!(
            status, 200,
            "GET approval {id} on {}: {v}",
            self.gws[i].name
        );
        v
    }

    /// Waits until instance `i` lists a pending request of `requester` on `target`.
    fn pending(&self, i: usize, requester: &str, target: &str) -> Value {
        wait_for(Duration::from_secs(20), || {
            let (status, v) = self.api(
                i,
                "GET",
                "/api/approvals?state=pending",
                &self.admin_token,
                "",
            );
            assert_eq!(status, 200, "{v}");
            v["approvals"]
                .as_array()
                .expect("an approvals list")
                .iter()
                .find(|r| r["requester"] == requester && r["target"] == target)
                .cloned()
        })
        .unwrap_or_else(|| {
            panic!(
                "{} lists no pending request by {requester} on {target}",
                self.gws[i].name
            )
        })
    }

    /// `GET /healthz` of instance `i`.
    fn health(&self, i: usize) -> (u16, Value) {
        let (status, body) = http_get(self.gws[i].admin, "/healthz");
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// Waits until instance `i` reports `{"status":"ok"}` (it reaches the store).
    fn wait_healthy(&self, i: usize) {
        let ok = wait_for(Duration::from_secs(20), || {
            let (status, h) = self.health(i);
            (status == 200 && h["status"] == "ok").then_some(())
        });
        assert!(
            ok.is_some(),
            "{} does not report reaching its state store: {:?}",
            self.gws[i].name,
            self.health(i)
        );
    }

    /// `sluice_state_errors_total` of instance `i` (summed over its labels).
    fn state_errors(&self, i: usize) -> Option<f64> {
        let (status, text) = http_get(self.gws[i].admin, "/metrics");
        assert_eq!(status, 200);
        series_sum(&text, "sluice_state_errors_total")
    }

    /// How many times the statements on counter `row` ran.
    fn counter(&self, row: u32) -> i64 {
        self.target
            .psql(&format!("SELECT n FROM counters WHERE id = {row}"))
            .parse()
            .expect("a counter")
    }
}

/// The sum of every sample of the metric `name` (any labels).
fn series_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(v) = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

/// Runs psql (simple query) in the background; returns its output and when it ended.
fn psql_bg(addr: SocketAddr, token: &str, sql: &str) -> thread::JoinHandle<(Output, Instant)> {
    let (token, sql) = (token.to_owned(), sql.to_owned());
    thread::spawn(move || {
        let out = psql_with(addr, &token, &["-At", "-c", &sql]);
        (out, Instant::now())
    })
}

/// Joins `h`, failing the test if it has not finished within `timeout`.
fn join_within<T>(h: thread::JoinHandle<T>, timeout: Duration, what: &str) -> T {
    assert!(
        wait_for(timeout, || h.is_finished().then_some(())).is_some(),
        "{what} did not finish within {timeout:?}"
    );
    h.join().unwrap()
}

/// The request id in a refusal: `approval N requested for ...`.
fn approval_id(msg: &str) -> u64 {
    msg.split("approval ")
        .nth(1)
        .and_then(|x| x.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no approval id in {msg:?}"))
}

/// Sends `sql` (simple query) through the no-wait target and expects it
/// refused with a new or pending request's id.
fn request_grant(c: &mut postgres::Client, sql: &str) -> u64 {
    let e = c.batch_execute(sql).expect_err("needs approval");
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    let msg = message(&e);
    assert!(
        msg.contains(
            "requested for UPDATE on db_nowait; run the same statement again once it is approved"
        ),
        "{msg}"
    );
    approval_id(&msg)
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(sluice_bin()).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `n` appears in `text` as a number of its own (not inside a longer one).
fn mentions_number(text: &str, n: u64) -> bool {
    let needle = n.to_string();
    let bytes = text.as_bytes();
    text.match_indices(&needle).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + needle.len()).copied();
        !before.is_some_and(|b| b.is_ascii_digit()) && !after.is_some_and(|b| b.is_ascii_digit())
    })
}

#[test]
fn a_statement_held_on_one_instance_is_decided_through_another() {
    let c = cluster(2, Opts::default());
    // The schema is created in the store, and both instances are in it.
    for name in [
        "sluice_approvals",
        "sluice_approval_votes",
        "sluice_instances",
        "sluice_audit_checkpoints",
        "sluice_schema",
        "sluice_approval_ids",
    ] {
        assert_eq!(
            c.state
                .psql(&format!("SELECT to_regclass('{name}') IS NOT NULL")),
            "t",
            "{name} is in the state store"
        );
    }
    let registered: u64 = c
        .state
        .psql("SELECT count(*) FROM sluice_instances")
        .parse()
        .unwrap();
    assert!(registered >= 2, "{registered} instances registered");

    // Held on A, listed by both, approved through B.
    let agent = c.keys.token("agent-1", &["agents"]);
    let held = psql_bg(
        c.gws[0].db,
        &agent,
        "UPDATE counters SET n = n + 1 WHERE id = 1",
    );
    let on_b = c.pending(1, "agent-1", "db");
    let on_a = c.pending(0, "agent-1", "db");
    let id = on_b["id"].as_u64().unwrap();
    assert_eq!(on_a["id"], on_b["id"], "{on_a}\n{on_b}");
    let holder = on_b["instance"].as_str().unwrap_or_default().to_owned();
    assert!(!holder.is_empty(), "the request names its instance: {on_b}");
    assert_eq!(on_a["instance"], on_b["instance"]);
    thread::sleep(Duration::from_millis(300));
    assert!(!held.is_finished(), "the statement waits for a decision");
    assert_eq!(c.counter(1), 0);
    let (status, v) = c.vote(1, id, "approve", "bob");
    let approved_at = Instant::now();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["decided"], true, "{v}");
    assert_eq!(v["request"]["state"], "approved", "{v}");
    let (out, done) = join_within(held, Duration::from_secs(10), "the held statement");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "UPDATE 1");
    let took = done.saturating_duration_since(approved_at);
    assert!(
        took < Duration::from_millis(2500),
        "released {took:?} after the approval through the other instance"
    );
    assert_eq!(c.counter(1), 1);
    for i in 0..2 {
        let r = c.request(i, id);
        assert_eq!(r["state"], "approved", "{r}");
        assert_eq!(r["used"], true, "{r}");
        assert_eq!(r["approvals"][0]["subject"], "bob", "{r}");
    }

    // Held on B (by someone who is an approver too), denied through A.
    let agent2 = c.keys.token("agent-2", &["agents", "dba"]);
    let held = psql_bg(
        c.gws[1].db,
        &agent2,
        "UPDATE counters SET n = n + 1 WHERE id = 2",
    );
    let r = c.pending(0, "agent-2", "db");
    let id2 = r["id"].as_u64().unwrap();
    assert_ne!(id2, id);
    assert!(
        r["instance"]
            .as_str()
            .is_some_and(|i| !i.is_empty() && i != holder),
        "held on another instance than {holder}: {r}"
    );
    // Nobody approves their own request, through either instance; an admin
    // outside the approvers' group is no approver.
    for i in 0..2 {
        let (status, v) = c.api(
            i,
            "POST",
            &format!("/api/approvals/{id2}/approve"),
            &agent2,
            REASON,
        );
        assert_eq!(status, 403, "own request through {}: {v}", c.gws[i].name);
    }
    let (status, v) = c.api(
        1,
        "POST",
        &format!("/api/approvals/{id2}/approve"),
        &c.admin_token,
        REASON,
    );
    assert_eq!(status, 403, "{v}");
    let (status, v) = c.vote(0, id2, "deny", "carol");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["decided"], true, "{v}");
    assert_eq!(v["request"]["state"], "denied", "{v}");
    let (out, _) = join_within(held, Duration::from_secs(10), "the denied statement");
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!(
            "approval {id2} for UPDATE on db was denied by carol"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(c.counter(2), 0);
    // A decision is final, whichever instance is asked.
    for i in 0..2 {
        let (status, v) = c.vote(i, id2, "approve", "bob");
        assert_eq!(status, 409, "{v}");
        assert_eq!(c.request(i, id2)["state"], "denied");
    }
}

#[test]
fn quorum_counts_distinct_people_across_instances() {
    let c = cluster(2, Opts::default());
    let agent = c.keys.token("agent-q", &["agents"]);
    let held = psql_bg(
        c.gws[0].quorum,
        &agent,
        "UPDATE counters SET n = n + 1 WHERE id = 3",
    );
    let id = c.pending(1, "agent-q", "db_quorum")["id"].as_u64().unwrap();
    let summary = |v: &Value| {
        (
            v["counted"].clone(),
            v["decided"].clone(),
            v["request"]["state"].clone(),
        )
    };
    let (status, v) = c.vote(0, id, "approve", "bob");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        summary(&v),
        (true.into(), false.into(), "pending".into()),
        "{v}"
    );
    // The same person through the other instance counts once.
    let (status, v) = c.vote(1, id, "approve", "bob");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        summary(&v),
        (false.into(), false.into(), "pending".into()),
        "{v}"
    );
    thread::sleep(Duration::from_millis(300));
    assert!(!held.is_finished(), "one person is not a quorum of two");
    assert_eq!(c.counter(3), 0);
    let (status, v) = c.vote(1, id, "approve", "carol");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        summary(&v),
        (true.into(), true.into(), "approved".into()),
        "{v}"
    );
    let (out, _) = join_within(held, Duration::from_secs(10), "the approved statement");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "UPDATE 1");
    assert_eq!(c.counter(3), 1);
    let r = c.request(0, id);
    let mut who: Vec<&str> = r["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["subject"].as_str().unwrap())
        .collect();
    who.sort_unstable();
    assert_eq!(who, ["bob", "carol"], "{r}");
    assert_eq!(r["used"], true, "{r}");

    // The same person through both instances at the same moment: one vote.
    let held = psql_bg(
        c.gws[1].quorum,
        &agent,
        "UPDATE counters SET n = n + 1 WHERE id = 4",
    );
    let id = c.pending(0, "agent-q", "db_quorum")["id"].as_u64().unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let votes: Vec<_> = (0..2)
        .map(|i| {
            let (admin, token, b) = (c.gws[i].admin, c.approver("bob"), barrier.clone());
            thread::spawn(move || {
                b.wait();
                try_api(
                    admin,
                    "POST",
                    &format!("/api/approvals/{id}/approve"),
                    &token,
                    REASON,
                )
            })
        })
        .collect();
    let votes: Vec<(u16, Value)> = votes
        .into_iter()
        .map(|h| join_within(h, Duration::from_secs(20), "a vote").expect("a vote's answer"))
        .collect();
    assert!(votes.iter().all(|(s, _)| *s == 200), "{votes:?}");
    assert_eq!(
        votes.iter().filter(|(_, v)| v["counted"] == true).count(),
        1,
        "bob counted once: {votes:?}"
    );
    assert!(
        votes.iter().all(|(_, v)| v["decided"] == false),
        "{votes:?}"
    );
    let r = c.request(1, id);
    assert_eq!(r["state"], "pending", "{r}");
    assert_eq!(r["approvals"].as_array().unwrap().len(), 1, "{r}");
    thread::sleep(Duration::from_millis(300));
    assert!(!held.is_finished());
    assert_eq!(c.counter(4), 0);
    let (status, v) = c.vote(0, id, "approve", "dave");
    assert_eq!((status, v["decided"].clone()), (200, true.into()), "{v}");
    let (out, _) = join_within(held, Duration::from_secs(10), "the approved statement");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.counter(4), 1);
}

#[test]
fn approve_and_deny_racing_on_two_instances_decide_once() {
    let c = cluster(2, Opts::default());
    let mut wins = (0, 0);
    for round in 0..6usize {
        let row = 20 + round as u32;
        let requester = format!("agent-r{round}");
        let agent = c.keys.token(&requester, &["agents"]);
        let holder = round % 2;
        let held = psql_bg(
            c.gws[holder].db,
            &agent,
            &format!("UPDATE counters SET n = n + 1 WHERE id = {row}"),
        );
        let id = c.pending(1 - holder, &requester, "db")["id"]
            .as_u64()
            .unwrap();
        // Approve through one instance, deny through the other, at once.
        let approve_on = (round / 2) % 2;
        let barrier = Arc::new(Barrier::new(2));
        let decide = |i: usize, action: &'static str, who: &str| {
            let (admin, token, b) = (c.gws[i].admin, c.approver(who), barrier.clone());
            thread::spawn(move || {
                b.wait();
                try_api(
                    admin,
                    "POST",
                    &format!("/api/approvals/{id}/{action}"),
                    &token,
                    REASON,
                )
            })
        };
        let approve = decide(approve_on, "approve", "bob");
        let deny = decide(1 - approve_on, "deny", "carol");
        let (sa, va) = join_within(approve, Duration::from_secs(20), "the approve")
            .expect("the approve's answer");
        let (sd, vd) =
            join_within(deny, Duration::from_secs(20), "the deny").expect("the deny's answer");
        let approved = match (sa, sd) {
            (200, 409) => {
                assert_eq!(va["decided"], true, "{va}");
                assert_eq!(va["request"]["state"], "approved", "{va}");
                true
            }
            (409, 200) => {
                assert_eq!(vd["decided"], true, "{vd}");
                assert_eq!(vd["request"]["state"], "denied", "{vd}");
                false
            }
            _ => panic!(
                "round {round}: approve -> {sa} {va}, deny -> {sd} {vd}: exactly one decision must win"
            ),
        };
        let (out, _) = join_within(held, Duration::from_secs(15), "the held statement");
        // Both instances agree on the outcome, and the statement matches it.
        let (on_a, on_b) = (c.request(0, id), c.request(1, id));
        assert_eq!(on_a["state"], on_b["state"], "{on_a}\n{on_b}");
        if approved {
            wins.0 += 1;
            assert_eq!(on_a["state"], "approved", "{on_a}");
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
            assert_eq!(stdout(&out).trim(), "UPDATE 1");
            assert_eq!(on_a["used"], true, "{on_a}");
            assert_eq!(c.counter(row), 1, "round {round}: ran once");
        } else {
            wins.1 += 1;
            assert_eq!(on_a["state"], "denied", "{on_a}");
            assert!(!out.status.success(), "round {round}: ran though denied");
            assert!(
                stderr(&out).contains("was denied by carol"),
                "{}",
                stderr(&out)
            );
            assert_eq!(on_a["used"], false, "{on_a}");
            assert_eq!(c.counter(row), 0, "round {round}: did not run");
        }
    }
    // Nothing ran late, either.
    thread::sleep(Duration::from_millis(500));
    let total: i64 = c
        .target
        .psql("SELECT sum(n) FROM counters WHERE id BETWEEN 20 AND 25")
        .parse()
        .unwrap();
    assert_eq!(
        total, wins.0,
        "approve won {} rounds, deny {}",
        wins.0, wins.1
    );
    eprintln!("approve won {} rounds, deny {}", wins.0, wins.1);
}

#[test]
fn a_grant_runs_once_whichever_instances_the_re_runs_reach() {
    // Three instances starting together (creating the schema at once).
    let c = cluster(
        3,
        Opts {
            parallel: true,
            ..Opts::default()
        },
    );
    let agent = c.keys.token("agent-g", &["agents"]);
    let mut on: Vec<postgres::Client> = c
        .gws
        .iter()
        .map(|g| connect(g.nowait, &agent, "postgres").expect("login"))
        .collect();
    let sql = "UPDATE counters SET n = n + 1 WHERE id = 30";
    let id = request_grant(&mut on[0], sql);
    // Re-run through B before the decision: the same request, not a new one.
    assert_eq!(request_grant(&mut on[1], sql), id);
    assert_eq!(c.request(2, id)["state"], "pending");
    let (status, v) = c.vote(2, id, "approve", "bob");
    assert_eq!((status, v["decided"].clone()), (200, true.into()), "{v}");
    // Used through A...
    on[0]
        .batch_execute(sql)
        .expect("the approved statement runs");
    assert_eq!(c.counter(30), 1);
    // ... and then refused through B and C (a new request, not this one).
    for i in [1, 2] {
        let e = on[i].batch_execute(sql).expect_err("a grant is used once");
        assert_eq!(sqlstate(&e), "42501", "{e:?}");
        let msg = message(&e);
        assert!(msg.contains("requested for UPDATE"), "{msg}");
        assert!(!msg.contains(&format!("approval {id} ")), "{msg}");
    }
    assert_eq!(c.counter(30), 1);
    for i in 0..3 {
        let r = c.request(i, id);
        assert_eq!(
            (r["state"].clone(), r["used"].clone()),
            ("approved".into(), true.into()),
            "{r}"
        );
    }

    // The same re-run through all three at once: exactly one runs.
    for round in 0..3usize {
        let row = 31 + round as u32;
        let sql = format!("UPDATE counters SET n = n + 1 WHERE id = {row}");
        let id = request_grant(&mut on[round], &sql);
        let (status, v) = c.vote((round + 1) % 3, id, "approve", "bob");
        assert_eq!((status, v["decided"].clone()), (200, true.into()), "{v}");
        let barrier = Arc::new(Barrier::new(3));
        let runs: Vec<_> = on
            .drain(..)
            .map(|mut client| {
                let (b, sql) = (barrier.clone(), sql.clone());
                thread::spawn(move || {
                    b.wait();
                    let r = client.batch_execute(&sql);
                    (client, r)
                })
            })
            .collect();
        let mut ran = 0;
        let mut refusals = Vec::new();
        for h in runs {
            let (client, r) = join_within(h, Duration::from_secs(20), "a re-run");
            match r {
                Ok(()) => ran += 1,
                Err(e) => {
                    assert_eq!(sqlstate(&e), "42501", "{e:?}");
                    refusals.push(message(&e));
                }
            }
            on.push(client);
        }
        assert_eq!(
            ran, 1,
            "round {round}: one grant, {ran} runs; refusals: {refusals:?}"
        );
        assert_eq!(c.counter(row), 1, "round {round}");
        let r = c.request(round % 3, id);
        assert_eq!(r["used"], true, "{r}");
    }
}

#[test]
fn a_killed_instance_s_request_is_abandoned_and_ids_are_never_reused() {
    let mut c = cluster(
        2,
        Opts {
            lease: Some("3s"),
            ..Opts::default()
        },
    );
    let agent = c.keys.token("agent-k", &["agents"]);
    // Some requests on both instances first.
    let mut before = Vec::new();
    for (i, row) in [(0usize, 40u32), (1, 41), (0, 42)] {
        let mut client = connect(c.gws[i].nowait, &agent, "postgres").unwrap();
        before.push(request_grant(
            &mut client,
            &format!("UPDATE counters SET n = n + 1 WHERE id = {row}"),
        ));
    }
    let held = psql_bg(
        c.gws[0].db,
        &agent,
        "UPDATE counters SET n = n + 1 WHERE id = 43",
    );
    let r = c.pending(1, "agent-k", "db");
    let id = r["id"].as_u64().unwrap();
    before.push(id);
    let mut distinct = before.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), before.len(), "ids are unique: {before:?}");
    let old_instance = r["instance"].clone();
    // A live instance keeps its requests past the lease (its heartbeat renews it).
    thread::sleep(Duration::from_millis(4000));
    let r = c.request(1, id);
    assert_eq!(
        r["state"], "pending",
        "abandoned while its instance was alive: {r}"
    );
    assert!(!held.is_finished());

    c.gws[0].sluice.signal(libc::SIGKILL);
    assert!(
        c.gws[0].sluice.wait_exit(Duration::from_secs(10)).is_some(),
        "the killed instance exited"
    );
    let killed = Instant::now();
    let (out, _) = join_within(
        held,
        Duration::from_secs(10),
        "the killed instance's client",
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    let state = wait_for(Duration::from_secs(15), || {
        let st = c.request(1, id)["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (st != "pending").then_some(st)
    });
    assert_eq!(
        state.as_deref(),
        Some("abandoned"),
        "the dead instance's request after {:?}",
        killed.elapsed()
    );
    eprintln!("abandoned {:?} after the kill", killed.elapsed());
    let (status, v) = c.vote(1, id, "approve", "bob");
    assert_eq!(status, 409, "an abandoned request cannot be approved: {v}");
    assert_eq!(c.counter(43), 0);

    // A again (a new process, the same config): new ids only, above every earlier one.
    let config = c.gws[0].config.clone();
    c.gws[0].sluice = Sluice::start(&config);
    c.wait_healthy(0);
    let highest = *before.iter().max().unwrap();
    let mut after = Vec::new();
    for (i, row) in [(0usize, 44u32), (1, 45), (0, 46)] {
        let mut client = connect(c.gws[i].nowait, &agent, "postgres").unwrap();
        after.push(request_grant(
            &mut client,
            &format!("UPDATE counters SET n = n + 1 WHERE id = {row}"),
        ));
    }
    // The restarted A holds statements like any live instance, past the lease too.
    let held = psql_bg(
        c.gws[0].db,
        &agent,
        "UPDATE counters SET n = n + 1 WHERE id = 47",
    );
    let r = c.pending(1, "agent-k", "db");
    let id2 = r["id"].as_u64().unwrap();
    after.push(id2);
    for new in &after {
        assert!(
            *new > highest,
            "id {new} after the restart is not above {highest}: before {before:?}, after {after:?}"
        );
    }
    let mut distinct = after.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), after.len(), "{after:?}");
    assert!(r["instance"].as_str().is_some_and(|i| !i.is_empty()), "{r}");
    assert_ne!(
        r["instance"], old_instance,
        "a new process has a new runtime id: {r}"
    );
    thread::sleep(Duration::from_millis(4000));
    let r = c.request(0, id2);
    assert_eq!(
        r["state"], "pending",
        "the restarted instance's request was abandoned while it was alive: {r}"
    );
    let (status, v) = c.vote(1, id2, "approve", "bob");
    assert_eq!(status, 200, "{v}");
    let (out, _) = join_within(held, Duration::from_secs(10), "the approved statement");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "UPDATE 1");
    assert_eq!(c.counter(47), 1);
    // The old request stays abandoned.
    assert_eq!(c.request(0, id)["state"], "abandoned");
    let last: u64 = c
        .state
        .psql("SELECT last_value FROM sluice_approval_ids")
        .parse()
        .unwrap();
    assert!(last >= id2, "sequence at {last}, id {id2} handed out");
}

#[test]
fn a_store_outage_keeps_held_statements_and_refuses_new_requests() {
    let c = cluster(
        2,
        Opts {
            lease: Some("3s"),
            ..Opts::default()
        },
    );
    let errors_before = c.state_errors(0).unwrap_or(0.0);
    let agent = c.keys.token("agent-s", &["agents"]);
    let held = psql_bg(
        c.gws[0].db,
        &agent,
        "UPDATE counters SET n = n + 1 WHERE id = 50",
    );
    let id = c.pending(1, "agent-s", "db")["id"].as_u64().unwrap();

    c.state.stop();
    let down = Instant::now();
    for i in 0..2 {
        let h = wait_for(Duration::from_secs(15), || {
            let (status, h) = c.health(i);
            (status == 200 && h["status"] == "degraded").then_some(h)
        })
        .unwrap_or_else(|| {
            panic!(
                "{} never reported degraded: {:?}",
                c.gws[i].name,
                c.health(i)
            )
        });
        assert!(
            h["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "says why: {h}"
        );
    }

    // A new statement needing approval is refused at once, on either
    // instance, in either mode.
    for (addr, row) in [
        (c.gws[1].db, 51u32),
        (c.gws[0].db, 52),
        (c.gws[0].nowait, 53),
    ] {
        let started = Instant::now();
        let o = psql_with(
            addr,
            &agent,
            &[
                "-At",
                "-c",
                &format!("UPDATE counters SET n = n + 1 WHERE id = {row}"),
            ],
        );
        let took = started.elapsed();
        assert!(!o.status.success(), "ran without the store: {}", stdout(&o));
        assert!(stderr(&o).contains("approval store"), "{}", stderr(&o));
        assert!(
            took < Duration::from_secs(10),
            "refused only after {took:?}"
        );
        assert_eq!(c.counter(row), 0);
    }
    let grew = wait_for(Duration::from_secs(15), || {
        (c.state_errors(0).unwrap_or(0.0) > errors_before).then_some(())
    });
    assert!(
        grew.is_some(),
        "sluice_state_errors_total did not grow from {errors_before}: {:?}",
        c.state_errors(0)
    );
    // Plain statements go on, new logins included.
    for i in 0..2 {
        let o = psql_with(
            c.gws[i].db,
            &agent,
            &["-At", "-c", "SELECT n FROM counters WHERE id = 50"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "0");
    }
    // The held statement keeps waiting, for longer than the lease.
    if let Some(rest) = Duration::from_secs(5).checked_sub(down.elapsed()) {
        thread::sleep(rest);
    }
    if held.is_finished() {
        let (o, _) = held.join().unwrap();
        panic!(
            "the held statement gave up while the store was down: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }

    c.state.restart();
    // Approved through B once it can reach the store again: the statement runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        match try_api(
            c.gws[1].admin,
            "POST",
            &format!("/api/approvals/{id}/approve"),
            &c.approver("bob"),
            REASON,
        ) {
            Ok((200, v)) => break v,
            Ok((409, v)) => panic!("the held request was closed by the outage: {v}"),
            other => {
                assert!(
                    Instant::now() < deadline,
                    "could not approve after the store came back: {other:?}"
                );
                thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert_eq!(v["request"]["state"], "approved", "{v}");
    let (out, _) = join_within(held, Duration::from_secs(10), "the held statement");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "UPDATE 1");
    assert_eq!(c.counter(50), 1);
    assert_eq!(c.request(0, id)["used"], true);
    // Both say they are fine again.
    for i in 0..2 {
        c.wait_healthy(i);
    }
    // And new requests open again.
    let mut client = connect(c.gws[0].nowait, &agent, "postgres").unwrap();
    request_grant(&mut client, "UPDATE counters SET n = n + 1 WHERE id = 54");
    assert_eq!(c.counter(54), 0);
}

/// The lines of the last segment of `audit`, and the indexes and seqs of its
/// checkpoints.
fn last_segment(audit: &Path) -> (PathBuf, Vec<String>, Vec<(usize, u64)>) {
    let segment = sluice::audit::chain::segments(audit)
        .unwrap()
        .pop()
        .expect("a segment");
    let text = std::fs::read_to_string(&segment).unwrap();
    let lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    let checkpoints = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let v: Value = serde_json::from_str(l.trim()).ok()?;
            (v["type"] == "checkpoint").then(|| (i, v["seq"].as_u64().unwrap()))
        })
        .collect();
    (segment, lines, checkpoints)
}

#[test]
fn audit_checkpoints_are_anchored_in_the_store_and_logs_merge() {
    let mut c = cluster(
        2,
        Opts {
            audit: true,
            ..Opts::default()
        },
    );
    let mut sessions: Vec<postgres::Client> = [("alice-a", 0usize), ("bob-b", 1)]
        .iter()
        .map(|(who, i)| connect(c.gws[*i].db, &c.keys.token(who, &["sre"]), "postgres").unwrap())
        .collect();
    // Interleaved, so the merge has something to interleave.
    let mut expected = Vec::new();
    for n in 0..12 {
        for (i, tag) in ["a", "b"].iter().enumerate() {
            let text = format!("SELECT '{tag}-{n}'");
            sessions[i].batch_execute(&text).unwrap();
            expected.push(text);
            thread::sleep(Duration::from_millis(5));
        }
    }
    drop(sessions);
    let anchored = wait_for(Duration::from_secs(10), || {
        let n: u64 = c
            .state
            .psql("SELECT count(*) FROM sluice_audit_checkpoints")
            .parse()
            .unwrap();
        (n >= 2).then_some(n)
    });
    assert!(anchored.is_some(), "no checkpoints in the store");
    for g in &mut c.gws {
        g.sluice.signal(libc::SIGTERM);
        assert_eq!(
            g.sluice
                .wait_exit(Duration::from_secs(20))
                .and_then(|s| s.code()),
            Some(0),
            "{} stopped cleanly",
            g.name
        );
    }
    let anchor = conninfo(&c.state);
    let dirs: Vec<String> = c
        .gws
        .iter()
        .map(|g| g.audit.as_ref().unwrap().to_str().unwrap().to_owned())
        .collect();
    for dir in &dirs {
        let (code, out, err) = cli(&["audit", "verify", "--dir", dir, "--anchor", &anchor]);
        assert_eq!(code, 0, "{dir}: {out}{err}");
    }

    // Both logs, merged by time.
    let (code, out, err) = cli(&["audit", "search", "--dir", &dirs[0], "--dir", &dirs[1]]);
    assert_eq!(code, 0, "{out}{err}");
    let merged: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let one = |dir: &str| {
        let (code, out, err) = cli(&["audit", "search", "--dir", dir]);
        assert_eq!(code, 0, "{out}{err}");
        out.lines().count()
    };
    assert_eq!(
        merged.len(),
        one(dirs[0].as_str()) + one(dirs[1].as_str()),
        "every record of both logs, once"
    );
    for who in ["alice-a", "bob-b"] {
        assert!(
            merged.iter().any(|r| r["subject"] == who),
            "no record of {who}"
        );
    }
    let commands: Vec<&str> = merged
        .iter()
        .filter(|r| r["type"] == "command")
        .filter_map(|r| r["text"].as_str())
        .filter(|t| t.starts_with("SELECT 'a-") || t.starts_with("SELECT 'b-"))
        .collect();
    assert_eq!(
        commands, expected,
        "the two instances' commands in time order"
    );

    // A's log cut back to its first checkpoint: a valid log on its own, but
    // not the one the store's anchor describes.
    let (segment, lines, checkpoints) = last_segment(Path::new(&dirs[0]));
    assert!(
        checkpoints.len() >= 3,
        "checkpoint_every = 5 makes several checkpoints: {checkpoints:?}"
    );
    let kept: String = lines[..=checkpoints[0].0].concat();
    std::fs::write(&segment, kept).unwrap();
    let (code, out, err) = cli(&["audit", "verify", "--dir", &dirs[0]]);
    assert_eq!(code, 0, "the cut-back log verifies on its own: {out}{err}");
    let (code, out, err) = cli(&["audit", "verify", "--dir", &dirs[0], "--anchor", &anchor]);
    let said = format!("{out}{err}");
    assert_ne!(code, 0, "the anchor catches the cut: {said}");
    let later: Vec<u64> = checkpoints[1..].iter().map(|(_, seq)| *seq).collect();
    assert!(
        later.iter().any(|seq| mentions_number(&said, *seq)),
        "names the anchored checkpoint (one of seq {later:?}): {said}"
    );
    // B's log is untouched and still matches its anchor.
    let (code, out, err) = cli(&["audit", "verify", "--dir", &dirs[1], "--anchor", &anchor]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The store's transitions under real contention: many threads (each call on
/// its own pooled connection, as on several instances) race to spend one
/// grant, and to approve and deny one request. Exactly one wins every round.
#[test]
fn store_transitions_are_atomic_under_contention() {
    use sluice::approvals::postgres::PgStore;
    use sluice::approvals::{ApprovalStore, Decision, Key, NewRequest, Voter};

    let state = PgCluster::start();
    let config = sluice_config::parse(
        &format!(
            "[[target]]\nname = \"t\"\nprotocol = \"tcp\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\naccess = [\"*\"]\n\
             [state]\npostgres = \"{}\"\ninstance = \"race\"\n",
            conninfo(&state)
        ),
        "t.toml",
        |_| None,
    )
    .unwrap();
    // Several stores: several instances, each with its own connections.
    let stores: Vec<Arc<PgStore>> = (0..4)
        .map(|_| PgStore::start(config.state.as_ref().unwrap()).unwrap())
        .collect();
    assert!(
        wait_for(Duration::from_secs(20), || stores
            .iter()
            .all(|s| s.health().is_none())
            .then_some(()))
        .is_some(),
        "the stores connect: {:?}",
        stores[0].health()
    );
    let now = || sluice::audit::now_ms();
    let voter = |s: &str| Voter {
        subject: s.into(),
        groups: vec!["dba".into()],
    };
    const THREADS: usize = 8;
    for round in 0..25u8 {
        let key = Key {
            requester: "agent".into(),
            target: "db".into(),
            hash: [round; 32],
        };
        let new = NewRequest {
            key: key.clone(),
            protocol: "postgres",
            summary: "DELETE".into(),
            text: format!("DELETE FROM t WHERE id = {round}"),
            params: Vec::new(),
            database: "db".into(),
            session: "s".into(),
            justification: Some("race".into()),
            approvers: vec!["dba".to_owned()].into(),
            quorum: 1,
            ttl_ms: 60_000,
            grant_ttl_ms: 60_000,
            reuse: false,
        };
        let (spent, _) = stores[0].open(new.clone(), now(), 1000).unwrap();
        stores[1]
            .vote(spent.id, &voter("bob"), Decision::Approve, None, now())
            .unwrap();
        // Decided by the race below; another statement (its approval must not
        // count as the raced grant).
        let mut other = new;
        other.key.hash[0] ^= 0xff;
        let (raced, _) = stores[2].open(other, now(), 1000).unwrap();
        let barrier = Arc::new(Barrier::new(THREADS));
        let outcomes: Vec<(bool, bool)> = (0..THREADS)
            .map(|i| {
                let (store, barrier, key) = (stores[i % 4].clone(), barrier.clone(), key.clone());
                let who = voter(&format!("approver-{i}"));
                let id = raced.id;
                thread::spawn(move || {
                    barrier.wait();
                    let granted = store.take_grant(&key, now()).unwrap().is_some();
                    let decision = if i % 2 == 0 {
                        Decision::Approve
                    } else {
                        Decision::Deny
                    };
                    let decided = match store.vote(id, &who, decision, None, now()) {
                        Ok(v) => v.decided,
                        Err(sluice::approvals::VoteError::Closed { .. }) => false,
                        Err(e) => panic!("vote: {e}"),
                    };
                    (granted, decided)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let grants = outcomes.iter().filter(|o| o.0).count();
        let decisions = outcomes.iter().filter(|o| o.1).count();
        assert_eq!(
            grants, 1,
            "round {round}: one grant spent once: {outcomes:?}"
        );
        assert_eq!(decisions, 1, "round {round}: one decision: {outcomes:?}");
        let r = stores[3].get(raced.id, now()).unwrap().unwrap();
        assert!(matches!(r.state.as_str(), "approved" | "denied"), "{r:?}");
    }
    // Ids came from the sequence: all distinct and increasing.
    let ids: Vec<u64> = stores[0]
        .list(None, now())
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids.len(), 50);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
}

/// A TCP proxy to the store that can stop answering without closing anything
/// (a network that drops everything, as far as the gateway can tell), and
/// come back with every old connection reset.
struct Blackhole {
    port: u16,
    upstream: std::sync::atomic::AtomicU16,
    swallow: std::sync::atomic::AtomicBool,
    open: std::sync::Mutex<Vec<TcpStream>>,
}

impl Blackhole {
    fn start() -> Arc<Blackhole> {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Arc::new(Blackhole {
            port: listener.local_addr().unwrap().port(),
            upstream: 0.into(),
            swallow: false.into(),
            open: Default::default(),
        });
        let p = proxy.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let port = p.upstream.load(SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                {
                    let mut open = p.open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let p = p.clone();
                    thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                // Read and dropped: the other side hears nothing.
                                Ok(_) if p.swallow.load(SeqCst) => {}
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        proxy
    }

    fn stop_answering(&self) {
        self.swallow
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The network is back: connections that lost bytes are reset, new ones pass.
    fn come_back(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.swallow
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A store that stops answering (no error, no closed connection): nothing
/// hangs on it. Held statements end at their timeout, new ones are refused in
/// bounded time, the admin API answers 503, /healthz says degraded; when the
/// store comes back, everything resumes.
#[test]
fn a_store_that_stops_answering_hangs_nothing() {
    let proxy = Blackhole::start();
    let c = cluster(
        1,
        Opts {
            proxy: Some(proxy.clone()),
            timeout: Some("6s"),
            ..Opts::default()
        },
    );
    let agent = c.keys.token("agent-h", &["agents"]);
    let held_at = Instant::now();
    let held = psql_bg(
        c.gws[0].db,
        &agent,
        "UPDATE counters SET n = n + 1 WHERE id = 60",
    );
    let pending = wait_for(Duration::from_secs(10), || {
        let (status, v) = c.api(0, "GET", "/api/approvals?state=pending", &c.admin_token, "");
        (status == 200 && v["approvals"].as_array().is_some_and(|a| !a.is_empty())).then_some(())
    });
    assert!(pending.is_some(), "the statement is held");
    proxy.stop_answering();
    let stopped = Instant::now();

    // The held statement ends at its timeout (6 s, plus the grace), though
    // the store never answers again.
    let (out, done) = join_within(held, Duration::from_secs(30), "the held statement");
    assert!(!out.status.success(), "it did not run: {}", stdout(&out));
    assert!(
        done.duration_since(held_at) < Duration::from_secs(20),
        "ended {:?} after it was held",
        done.duration_since(held_at)
    );
    assert_eq!(c.counter(60), 0);

    // Degraded, and a new statement needing approval is refused in bounded time.
    let degraded = wait_for(Duration::from_secs(15), || {
        let (status, h) = c.health(0);
        (status == 200 && h["status"] == "degraded").then_some(())
    });
    assert!(degraded.is_some(), "{:?}", c.health(0));
    let asked = Instant::now();
    let out = psql_with(
        c.gws[0].db,
        &agent,
        &["-At", "-c", "UPDATE counters SET n = n + 1 WHERE id = 61"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("approval store"), "{}", stderr(&out));
    assert!(
        asked.elapsed() < Duration::from_secs(12),
        "refused after {:?}",
        asked.elapsed()
    );
    let (status, v) = c.api(0, "GET", "/api/approvals?state=pending", &c.admin_token, "");
    assert_eq!(status, 503, "{v}");
    assert!(
        !v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1"),
        "callers are not told the store's details: {v}"
    );
    assert!(stopped.elapsed() < Duration::from_secs(60));

    // Back: the instance reconnects and holds statements again.
    proxy.come_back();
    c.wait_healthy(0);
    let held = psql_bg(
        c.gws[0].db,
        &agent,
        "UPDATE counters SET n = n + 1 WHERE id = 62",
    );
    let id = wait_for(Duration::from_secs(10), || {
        let (_, v) = c.api(0, "GET", "/api/approvals?state=pending", &c.admin_token, "");
        v["approvals"][0]["id"].as_u64()
    })
    .expect("held again");
    let (status, v) = c.vote(0, id, "approve", "bob");
    assert_eq!(status, 200, "{v}");
    let (out, _) = join_within(held, Duration::from_secs(15), "the approved statement");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.counter(62), 1);
}
