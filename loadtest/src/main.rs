//! `sluice-loadtest`: drives the same scenario against several endpoints in
//! alternation (A B A B ...) in one run and prints them side by side, so machine
//! noise hits every endpoint alike and the ratios mean something.
//!
//! ```text
//! sluice-loadtest echo --listen 127.0.0.1:7000
//! sluice-loadtest tcp-stream --compare direct=127.0.0.1:7000 sluice=127.0.0.1:7001 \
//!     haproxy=127.0.0.1:7002 --duration 20s --connections 4
//! ```
//!
//! CPU per operation is read from `/proc/PID/stat` of the process listening on each
//! endpoint's port (or `--pid name=PID`), before and after each of its slices.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;

mod gate;
mod http;
mod pg;
mod pgload;
mod procstat;
mod report;
mod tcp;
mod token;

#[derive(Parser)]
#[command(
    name = "sluice-loadtest",
    version,
    about = "Side-by-side load tests for Sluice"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Endpoints as name=host:port; the first is the baseline of the ratio column.
    #[arg(long, num_args = 1.., required = true, value_name = "NAME=ADDR")]
    compare: Vec<String>,
    /// Total measured time per endpoint, split over the rounds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// How many alternating slices each endpoint gets.
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The process whose CPU counts for an endpoint: name=PID (found from the port otherwise).
    #[arg(long, value_name = "NAME=PID")]
    pid: Vec<String>,
    /// Write the full result as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// Compare with this baseline (a `--json` report of the same scenario);
    /// exit 1 listing what regressed.
    #[arg(long, value_name = "BASELINE.json")]
    gate: Option<std::path::PathBuf>,
    /// Record the result into this baseline file: it replaces the report from
    /// a machine like this one (see `gate`) and is kept beside those from
    /// other kinds of machine.
    #[arg(long, value_name = "BASELINE.json")]
    record: Option<std::path::PathBuf>,
    /// How much worse a ratio or CPU per operation may be than the baseline.
    #[arg(long, default_value = "10%", value_parser = gate::parse_fraction)]
    max_regression: f64,
}

/// How simulated agents get their tokens.
#[derive(clap::Args, Clone)]
struct TokenArgs {
    /// Dev private key (from `sluice token keygen`): each agent gets its own
    /// token (a Postgres password, an HTTP bearer token). Without it none is
    /// sent (a direct Postgres with trust auth ignores the password).
    #[arg(long, value_name = "FILE")]
    key: Option<std::path::PathBuf>,
    /// Token issuer.
    #[arg(long, default_value = "https://idp.sluice.test/")]
    iss: String,
    /// Token audience.
    #[arg(long, default_value = "sluice")]
    aud: String,
}

impl TokenArgs {
    fn minter(&self) -> anyhow::Result<Option<token::Minter>> {
        self.key
            .as_ref()
            .map(|k| token::Minter::load(k, &self.iss, &self.aud))
            .transpose()
    }
}

#[derive(clap::Args, Clone)]
struct HttpRunArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    tokens: TokenArgs,
    /// Simulated agents (tokens), spread over the connections.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// The path requested.
    #[arg(long, default_value = "/v1/customers")]
    path: String,
}

#[derive(clap::Args, Clone)]
struct PgRunArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    tokens: TokenArgs,
    #[arg(long, default_value = "postgres")]
    database: String,
    /// Startup user (informational through Sluice; the login user direct).
    #[arg(long, default_value = "postgres")]
    user: String,
    /// Simulated agents; each opens `--connections` connections.
    #[arg(long, default_value_t = 1)]
    agents: usize,
    /// Open-loop target rate in operations per second across all connections.
    #[arg(long)]
    rate: Option<f64>,
    /// Use the simple query protocol instead of prepared statements.
    #[arg(long)]
    simple: bool,
    /// pgbench scale factor of the database (accounts = 100000 × scale).
    #[arg(long, default_value_t = 1)]
    scale: u64,
    /// Create the scenario's table first, through the first endpoint.
    #[arg(long)]
    setup: bool,
    /// `pg-write`: every n-th operation is a DELETE a gateway holds for approval (0: none).
    #[arg(long, default_value_t = 20)]
    held_every: u64,
    /// `pg-write`: name=ADMIN_ADDR of the endpoint whose gateway holds statements;
    /// a simulated approver (token from `--key`, group `dba`) approves them there.
    #[arg(long, value_name = "NAME=ADDR")]
    approver: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Bulk throughput through an echo upstream (MiB/s echoed, CPU µs per MiB).
    TcpStream(RunArgs),
    /// 64-byte request/response round trips (ops/s, latency, CPU µs per op).
    TcpRr(RunArgs),
    /// pgbench `-S`-like point reads (run `pgbench -i` on the database first).
    PgSelect(PgRunArgs),
    /// 100-row result sets full of PII, so masking works hard (`--setup` makes the table).
    PgRows(PgRunArgs),
    /// A new connection (login and token check) per query.
    PgConnect(PgRunArgs),
    /// Point updates, with every `--held-every`-th statement held for approval
    /// and approved by a simulated approver (`--approver name=ADMIN_ADDR`).
    PgWrite(PgRunArgs),
    /// Keep-alive GETs of a small JSON document full of PII (requests/s, latency,
    /// CPU µs per request), each agent with its own bearer token.
    HttpJson(HttpRunArgs),
    /// Run the JSON server that stands behind the endpoints of `http-json`.
    HttpUpstream {
        #[arg(long, default_value = "127.0.0.1:7110")]
        listen: SocketAddr,
    },
    /// Run an echo server to stand behind the endpoints of the tcp scenarios.
    Echo {
        #[arg(long, default_value = "127.0.0.1:7000")]
        listen: SocketAddr,
    },
}

/// One timed slice against one endpoint.
pub struct Sample {
    /// Bytes for stream scenarios, round trips otherwise.
    pub ops: u64,
    pub elapsed: Duration,
    pub errors: u64,
    /// Microseconds per operation (empty for stream scenarios).
    pub latency: Histogram<u64>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().map_err(|_| format!("invalid duration `{s}`"))?;
    Ok(Duration::from_secs_f64(v * mult))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Echo { listen } => tcp::echo(listen),
        Command::TcpStream(args) => run("tcp-stream", args, report::Unit::MiB, tcp::stream),
        Command::TcpRr(args) => run("tcp-rr", args, report::Unit::Ops, tcp::request_response),
        Command::PgSelect(a) => run_pg("pg-select", pgload::Scenario::Select, a),
        Command::PgRows(a) => run_pg("pg-rows", pgload::Scenario::Rows, a),
        Command::PgConnect(a) => run_pg("pg-connect", pgload::Scenario::Connect, a),
        Command::PgWrite(a) => run_pg("pg-write", pgload::Scenario::Write, a),
        Command::HttpUpstream { listen } => http::upstream(listen),
        Command::HttpJson(a) => {
            let tokens: Vec<String> = match a.tokens.minter()? {
                Some(m) => (0..a.agents.max(1))
                    .map(|i| m.mint(&format!("agent-{i}"), &["agents"]))
                    .collect(),
                None => Vec::new(),
            };
            let path = a.path.clone();
            run(
                "http-json",
                a.run,
                report::Unit::Ops,
                move |addr, conns, time| http::run(addr, conns, time, &tokens, &path),
            )
        }
    }
}

fn run_pg(name: &str, scenario: pgload::Scenario, a: PgRunArgs) -> anyhow::Result<()> {
    let minter = a.tokens.minter()?.map(std::sync::Arc::new);
    let args = pgload::PgArgs {
        minter,
        user: a.user.clone(),
        database: a.database.clone(),
        agents: a.agents.max(1),
        connections: a.run.connections.max(1),
        rate: a.rate,
        extended: !a.simple,
        scale: a.scale.max(1),
        held_every: a.held_every,
        approver: None,
    };
    let approvers: Vec<(String, SocketAddr)> = a
        .approver
        .iter()
        .map(|s| {
            let (n, addr) = s
                .split_once('=')
                .context("--approver takes name=ADMIN_ADDR")?;
            Ok((n.to_owned(), addr.parse().context("--approver address")?))
        })
        .collect::<anyhow::Result<_>>()?;
    let endpoint_names: Vec<(SocketAddr, String)> = a
        .run
        .compare
        .iter()
        .filter_map(|c| {
            let (n, addr) = c.split_once('=')?;
            Some((addr.parse().ok()?, n.to_owned()))
        })
        .collect();
    if a.setup && scenario == pgload::Scenario::Rows {
        let first = a.run.compare.first().context("no endpoint")?;
        let addr: SocketAddr = first.split_once('=').context("name=addr")?.1.parse()?;
        let pw = args
            .minter
            .as_ref()
            .map_or_else(|| "unused".to_owned(), |m| m.mint("setup", &["agents"]));
        let mut c = pg::Conn::connect(addr, &args.user, &args.database, &pw)?;
        if let Some(e) = c.simple(pgload::ROWS_SETUP)?.error {
            bail!("setup failed: {e}");
        }
    }
    let run_args = RunArgs {
        connections: args.agents * args.connections,
        ..a.run.clone()
    };
    let once = move |addr: SocketAddr, _conns: usize, time: Duration| {
        // The approver of this endpoint's gateway, if it has one.
        let name = endpoint_names
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, n)| n);
        let approver = name.and_then(|n| approvers.iter().find(|(m, _)| m == n).map(|(_, a)| *a));
        let args = pgload::PgArgs {
            approver,
            ..args.clone()
        };
        pgload::run(scenario, addr, &args, time)
    };
    run(name, run_args, report::Unit::Ops, once)
}

fn run(
    scenario: &str,
    args: RunArgs,
    unit: report::Unit,
    once: impl Fn(SocketAddr, usize, Duration) -> Sample,
) -> anyhow::Result<()> {
    let mut endpoints = Vec::new();
    for c in &args.compare {
        let (name, addr) = c
            .split_once('=')
            .context("--compare takes name=host:port")?;
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("bad address in `{c}`"))?;
        let pid = match args
            .pid
            .iter()
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
        {
            Some(p) => Some(p.parse().context("--pid takes name=PID")?),
            None => procstat::pid_listening_on(addr.port()),
        };
        endpoints.push(report::Endpoint::new(name, addr, pid));
    }
    if endpoints.is_empty() {
        bail!("nothing to compare");
    }
    let rounds = args.rounds.max(1);
    let slice = args.duration / rounds;
    eprintln!(
        "{scenario}: {} endpoints, {rounds} rounds of {slice:?} each, {} connections",
        endpoints.len(),
        args.connections
    );
    for round in 0..rounds {
        for e in &mut endpoints {
            let cpu_before = e.pid.and_then(procstat::cpu_micros);
            let sample = once(e.addr, args.connections, slice);
            let cpu_after = e.pid.and_then(procstat::cpu_micros);
            if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
                e.cpu_micros += b.saturating_sub(a);
            }
            eprintln!(
                "  round {} {:>10}: {:.1} {}",
                round + 1,
                e.name,
                unit.rate(&sample),
                unit.label()
            );
            e.add(sample);
        }
    }
    let table = report::table(scenario, unit, &endpoints);
    println!("{table}");
    let report = report::json(scenario, unit, &args.connections, &endpoints);
    if let Some(path) = &args.json {
        std::fs::write(path, &report).with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.record {
        let existing = match std::fs::read_to_string(path) {
            Ok(text) => Some(
                serde_json::from_str::<serde_json::Value>(&text)
                    .with_context(|| format!("{}: not a loadtest report", path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let current: serde_json::Value = serde_json::from_str(&report)?;
        let all = gate::record(&current, existing.as_ref());
        std::fs::write(path, serde_json::to_string_pretty(&all)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.gate {
        let baseline: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?,
        )
        .with_context(|| format!("{}: not a loadtest report", path.display()))?;
        let current: serde_json::Value = serde_json::from_str(&report)?;
        let baseline = gate::pick(&current, &baseline);
        let (ok, table) = gate::check(&current, baseline, args.max_regression);
        println!("{table}");
        if !ok {
            eprintln!("gate: {scenario} regressed against {}", path.display());
            std::process::exit(1);
        }
    }
    Ok(())
}
