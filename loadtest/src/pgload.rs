//! Postgres scenarios. Each simulated agent has its own token (minted from the dev
//! key) and `--connections` connections; loops are closed unless `--rate` sets an
//! open-loop schedule, in which case latency is measured from each operation's
//! intended start (no coordinated omission).
//!
//! - `pg-select`: pgbench `-S`-like point reads on `pgbench_accounts` (run
//!   `pgbench -i` on the database first).
//! - `pg-rows`: 100-row result sets full of PII (`--setup` creates the table), so
//!   masking works hard.
//! - `pg-connect`: a new connection (login, token check) per query.
//! - `pg-write`: point updates on `pgbench_accounts`; every `--held-every`-th
//!   operation is a `DELETE` that a gateway with an `approve` rule holds, and a
//!   simulated approver (`--approver`) approves through the admin API. The held
//!   operations' latencies (sending the statement to its completion: the whole
//!   approval round trip) are also kept apart, in `Sample::held`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::pg::Conn;
use crate::token::Minter;
use crate::Sample;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scenario {
    Select,
    Rows,
    Connect,
    Write,
}

#[derive(Clone)]
pub struct PgArgs {
    pub minter: Option<Arc<Minter>>,
    pub user: String,
    pub database: String,
    pub agents: usize,
    pub connections: usize,
    /// Operations per second across all connections (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    pub extended: bool,
    pub scale: u64,
    /// `pg-write`: every n-th operation is a statement held for approval.
    pub held_every: u64,
    /// `pg-write`: the gateway's admin address, where the simulated approver acts
    /// (with a shared `[state]`, any instance's, whichever instance holds).
    pub approver: Option<SocketAddr>,
}

impl PgArgs {
    fn password(&self, agent: usize) -> String {
        match &self.minter {
            Some(m) => m.mint(&format!("agent-{agent}"), &["agents"]),
            // A direct Postgres with trust auth ignores it.
            None => "unused".to_owned(),
        }
    }
}

pub const ROWS_SETUP: &str = "CREATE TABLE IF NOT EXISTS loadtest_pii AS \
    SELECT g AS id, 'customer' || g || '@example.com' AS email, '4111 1111 1111 1111' AS card, \
    '078-05-' || lpad((1000 + g % 9000)::text, 4, '0') AS ssn, '+1 415 555 ' || lpad((g % 10000)::text, 4, '0') AS phone, \
    md5(g::text) AS note FROM generate_series(1, 1000) g";

/// Runs `scenario` against `addr` for `time`.
pub fn run(scenario: Scenario, addr: SocketAddr, args: &PgArgs, time: Duration) -> Sample {
    let threads = args.agents * args.connections;
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(threads as f64 / r.max(1e-9)));
    let started = Instant::now();
    let deadline = started + time;
    // The simulated approver works only against the endpoint it belongs to.
    let approver = match (scenario, args.approver, &args.minter) {
        (Scenario::Write, Some(admin), Some(m)) => {
            let token = m.mint("approver-bot", &["dba"]);
            Some(thread::spawn(move || {
                approve_pending(admin, &token, deadline + Duration::from_secs(2))
            }))
        }
        _ => None,
    };
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let args = args.clone();
            thread::spawn(move || worker(scenario, addr, &args, i, deadline, interval))
        })
        .collect();
    let mut latency = histogram();
    let mut held = histogram();
    let mut errors = 0;
    let mut first_error = None;
    for h in handles {
        if let Ok((hist, held_hist, e, msg)) = h.join() {
            let _ = latency.add(&hist);
            let _ = held.add(&held_hist);
            errors += e;
            first_error = first_error.or(msg);
        }
    }
    if let Some(e) = first_error {
        eprintln!("    first error at {addr}: {e}");
    }
    if let Some(a) = approver {
        if let Ok(n) = a.join() {
            eprintln!("    approver approved {n} requests");
        }
    }
    Sample {
        ops: latency.len(),
        elapsed: started.elapsed(),
        errors,
        latency,
        held: (scenario == Scenario::Write && args.held_every > 0).then_some(held),
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

fn worker(
    scenario: Scenario,
    addr: SocketAddr,
    args: &PgArgs,
    index: usize,
    deadline: Instant,
    interval: Option<Duration>,
) -> (Histogram<u64>, Histogram<u64>, u64, Option<String>) {
    let mut hist = histogram();
    let mut held = histogram();
    let mut errors = 0u64;
    let mut first_error: Option<String> = None;
    let agent = index / args.connections.max(1);
    let password = args.password(agent);
    let mut fail = |e: String, errors: &mut u64| {
        *errors += 1;
        first_error.get_or_insert(e);
    };
    let mut conn = None;
    if scenario != Scenario::Connect {
        match Conn::connect(addr, &args.user, &args.database, &password) {
            Ok(mut c) => {
                let prepared = match scenario {
                    Scenario::Select => {
                        Some("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
                    }
                    Scenario::Write => {
                        Some("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = $1")
                    }
                    _ => None,
                };
                if let (Some(sql), true) = (prepared, args.extended) {
                    if let Err(e) = c.prepare("sel", sql) {
                        fail(e.to_string(), &mut errors);
                        return (hist, held, errors, first_error);
                    }
                }
                conn = Some(c);
            }
            Err(e) => {
                fail(e.to_string(), &mut errors);
                return (hist, held, errors, first_error);
            }
        }
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (index as u64 + 1);
    let mut next = Instant::now();
    let mut op = 0u64;
    while Instant::now() < deadline {
        op += 1;
        let intended = match interval {
            Some(iv) => {
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                }
                let t = next;
                next += iv;
                t
            }
            None => Instant::now(),
        };
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let aid = (x % (100_000 * args.scale)) + 1;
        let is_held = scenario == Scenario::Write
            && args.held_every > 0
            && op.is_multiple_of(args.held_every);
        let sent = Instant::now();
        let result = match scenario {
            Scenario::Select => {
                let c = conn.as_mut().expect("connected");
                if args.extended {
                    c.execute("sel", &[&aid.to_string()])
                } else {
                    c.simple(&format!(
                        "SELECT abalance FROM pgbench_accounts WHERE aid = {aid}"
                    ))
                }
            }
            Scenario::Rows => conn
                .as_mut()
                .expect("connected")
                .simple("SELECT * FROM loadtest_pii ORDER BY id LIMIT 100"),
            Scenario::Connect => Conn::connect(addr, &args.user, &args.database, &password)
                .and_then(|mut c| c.simple("SELECT 1")),
            Scenario::Write => {
                let c = conn.as_mut().expect("connected");
                if is_held {
                    // Deletes nothing; through a gateway it waits for approval.
                    c.simple(&format!("DELETE FROM pgbench_history WHERE tid = -{aid}"))
                } else if args.extended {
                    c.execute("sel", &[&aid.to_string()])
                } else {
                    c.simple(&format!(
                        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = {aid}"
                    ))
                }
            }
        };
        match result {
            Ok(o) if o.error.is_none() => {
                let took = intended.elapsed();
                if took > Duration::from_secs(1) {
                    eprintln!(
                        "    slow {}operation: {} ms on connection {index} ({addr})",
                        if is_held { "held " } else { "" },
                        took.as_millis()
                    );
                }
                hist.saturating_record(took.as_micros().max(1) as u64);
                if is_held {
                    // The approval round trip: from sending the statement,
                    // even when an open-loop schedule is behind.
                    held.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                }
            }
            Ok(o) => fail(o.error.unwrap_or_default(), &mut errors),
            Err(e) => {
                fail(e.to_string(), &mut errors);
                if scenario != Scenario::Connect {
                    break;
                }
            }
        }
    }
    (hist, held, errors, first_error)
}

/// The simulated approver: approves every pending request it may see, until
/// `until`; returns how many it approved.
fn approve_pending(admin: SocketAddr, token: &str, until: Instant) -> u64 {
    let mut approved = 0;
    while Instant::now() < until {
        let pending = admin_call(admin, "GET", "/api/approvals?state=pending", token);
        let ids: Vec<u64> = pending
            .as_ref()
            .and_then(|v| v["approvals"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["id"].as_u64())
            .collect();
        for id in &ids {
            if admin_call(
                admin,
                "POST",
                &format!("/api/approvals/{id}/approve"),
                token,
            )
            .is_some()
            {
                approved += 1;
            }
        }
        if ids.is_empty() {
            thread::sleep(Duration::from_millis(2));
        }
    }
    approved
}

/// One admin API call (HTTP/1.1, connection closed after); the JSON body of a
/// 2xx answer.
fn admin_call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let ok = out.get(9..10) == Some("2");
    let body = out.split_once("\r\n\r\n")?.1;
    ok.then(|| serde_json::from_str(body).ok()).flatten()
}
