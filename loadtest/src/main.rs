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
//! endpoint's port (or `--pid name=PID`), before and after each of its slices; in
//! the SSH scenarios, of that process and every process below it (sshd forks one
//! per connection).

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
mod reaper;
mod report;
mod ssh;
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
    /// Another process whose CPU counts for an endpoint too, beside its own
    /// (e.g. the sshd behind a gateway): name=PID, repeatable.
    #[arg(long, value_name = "NAME=PID")]
    extra_pid: Vec<String>,
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
    /// Behind a load balancer over instances that share a `[state]` store, the
    /// admin address of any one of them: it approves what any instance holds.
    #[arg(long, value_name = "NAME=ADDR")]
    approver: Vec<String>,
}

/// What the SSH scenarios share.
#[derive(clap::Args, Clone)]
struct SshArgs {
    #[command(flatten)]
    run: RunArgs,
    // The dev key (`--key`): at the endpoints of `--token`, each worker's own
    // token is its password.
    #[command(flatten)]
    tokens: TokenArgs,
    /// Private key for the key logins (an sshd, a jump host and the host behind it).
    #[arg(long, value_name = "FILE")]
    identity: Option<std::path::PathBuf>,
    /// Login user (the sshd's account; informational at a token endpoint).
    /// Default: the current user.
    #[arg(long)]
    user: Option<String>,
    /// An endpoint whose login is an access token as the password (Sluice), repeatable.
    #[arg(long, value_name = "NAME")]
    token: Vec<String>,
    /// An endpoint that is a jump host: the client logs in there, opens a
    /// direct-tcpip channel to TARGET and logs in to TARGET through it (`ssh -J`).
    #[arg(long, value_name = "NAME=TARGET")]
    jump: Vec<String>,
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
    /// and approved by a simulated approver (`--approver name=ADMIN_ADDR`); the
    /// held statements' round trips are reported apart too.
    PgWrite(PgRunArgs),
    /// Keep-alive GETs of a small JSON document full of PII (requests/s, latency,
    /// CPU µs per request), each agent with its own bearer token.
    HttpJson(HttpRunArgs),
    /// Short commands, each in a new session channel of a kept connection
    /// (ops/s, latency, CPU µs per command); `--new-connection`: a new
    /// connection and login per command.
    SshExec {
        #[command(flatten)]
        ssh: SshArgs,
        /// The command each operation runs.
        #[arg(long, default_value = "true")]
        command: String,
        /// Every operation is a new connection, login and command.
        #[arg(long)]
        new_connection: bool,
    },
    /// Bulk output through one session per connection: `head -c BYTES
    /// /dev/zero` over and over (MiB/s read, CPU µs per MiB).
    SshStream {
        #[command(flatten)]
        ssh: SshArgs,
        /// Bytes per command. Through Sluice, a channel's recording may grow to
        /// 256 MiB, and a NUL byte takes 6 there (`\u0000`).
        #[arg(long, default_value_t = 16 << 20)]
        bytes: u64,
        /// The byte source instead of `head -c BYTES /dev/zero` (a command that
        /// writes to stdout and ends).
        #[arg(long)]
        command: Option<String>,
    },
    /// Run the JSON server that stands behind the endpoints of `http-json`.
    HttpUpstream {
        #[arg(long, default_value = "127.0.0.1:7110")]
        listen: SocketAddr,
    },
    /// Run a forking server (sshd) under a subreaper that waits for every
    /// process it leaves behind, so the SSH scenarios count its whole tree's CPU.
    Reaper {
        /// The server and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
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
    /// `pg-write`: microseconds per operation held for approval, from sending
    /// the statement to its completion (also counted in `ops` and `latency`).
    pub held: Option<Histogram<u64>>,
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
        Command::Reaper { command } => reaper::run(&command),
        Command::TcpStream(args) => run("tcp-stream", args, report::Unit::MiB, tcp::stream),
        Command::TcpRr(args) => run("tcp-rr", args, report::Unit::Ops, tcp::request_response),
        Command::PgSelect(a) => run_pg("pg-select", pgload::Scenario::Select, a),
        Command::PgRows(a) => run_pg("pg-rows", pgload::Scenario::Rows, a),
        Command::PgConnect(a) => run_pg("pg-connect", pgload::Scenario::Connect, a),
        Command::PgWrite(a) => run_pg("pg-write", pgload::Scenario::Write, a),
        Command::HttpUpstream { listen } => http::upstream(listen),
        Command::SshExec {
            ssh,
            command,
            new_connection,
        } => {
            let name = if new_connection {
                "ssh-exec --new-connection"
            } else {
                "ssh-exec"
            };
            let work = ssh::Work::Exec {
                command,
                new_connection,
            };
            run_ssh(name, ssh, report::Unit::Ops, work)
        }
        Command::SshStream {
            ssh,
            bytes,
            command,
        } => {
            let work = ssh::Work::Stream {
                command: command.unwrap_or_else(|| format!("head -c {bytes} /dev/zero")),
            };
            run_ssh("ssh-stream", ssh, report::Unit::MiB, work)
        }
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

/// The SSH scenarios: each endpoint's login from `--token` and `--jump`
/// (a key login otherwise); CPU of each endpoint's process tree.
fn run_ssh(name: &str, a: SshArgs, unit: report::Unit, work: ssh::Work) -> anyhow::Result<()> {
    let mut logins: Vec<(SocketAddr, ssh::Login)> = Vec::new();
    for c in &a.run.compare {
        let (n, addr) = c
            .split_once('=')
            .context("--compare takes name=host:port")?;
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("bad address in `{c}`"))?;
        let jump = a
            .jump
            .iter()
            .find_map(|j| j.strip_prefix(n)?.strip_prefix('='));
        let login = match (a.token.iter().any(|t| t == n), jump) {
            (true, Some(_)) => bail!("`{n}` is both --token and --jump"),
            (true, None) => ssh::Login::Token,
            (false, Some(target)) => ssh::Login::Jump {
                target: target
                    .parse()
                    .with_context(|| format!("--jump {n}=TARGET: bad address `{target}`"))?,
            },
            (false, None) => ssh::Login::Key,
        };
        logins.push((addr, login));
    }
    for n in a.token.iter().chain(a.jump.iter()) {
        let n = n.split_once('=').map_or(n.as_str(), |(n, _)| n);
        if !a
            .run
            .compare
            .iter()
            .any(|c| c.split_once('=').map(|(c, _)| c) == Some(n))
        {
            bail!("`{n}` (--token or --jump) is not an endpoint of --compare");
        }
    }
    let mut run_args = a.run.clone();
    run_args.pid.extend(reaper_pids(&a.run));
    // An extra sshd (the one behind a hop) is counted from its reaper too.
    for e in &mut run_args.extra_pid {
        let under = e.split_once('=').and_then(|(n, p)| {
            let r = reaper::of(p.parse().ok()?)?;
            Some(format!("{n}={r}"))
        });
        if let Some(under) = under {
            *e = under;
        }
    }
    let minter = a.tokens.minter()?.map(std::sync::Arc::new);
    if !a.token.is_empty() && minter.is_none() {
        bail!("--token endpoints need --key (the dev key their tokens are minted from)");
    }
    let identity = a
        .identity
        .as_ref()
        .map(|p| {
            russh::keys::load_secret_key(p, None)
                .with_context(|| format!("--identity {}", p.display()))
        })
        .transpose()?;
    if identity.is_none() && logins.iter().any(|(_, l)| !matches!(l, ssh::Login::Token)) {
        bail!("key logins (endpoints not in --token) need --identity");
    }
    let user = match a.user.clone() {
        Some(u) => u,
        None => current_user().context("no --user, and the current user has no name")?,
    };
    let client = std::sync::Arc::new(ssh::Client::new(user, identity, minter));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_name("loadtest-ssh")
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let once = move |addr: SocketAddr, conns: usize, time: Duration| {
        let login = logins
            .iter()
            .find(|(a, _)| *a == addr)
            .map_or(ssh::Login::Key, |(_, l)| l.clone());
        ssh::run(&runtime, &client, addr, &login, &work, conns, time)
    };
    run_with_cpu(name, run_args, unit, procstat::tree_cpu_micros, once)
}

/// `name=PID` for each endpoint without `--pid` whose listener runs under
/// `sluice-loadtest reaper`: its tree is counted from the reaper, which holds
/// the time of the processes the listener's children left behind. A listener
/// that is not under one is counted from itself, with a warning.
fn reaper_pids(run: &RunArgs) -> Vec<String> {
    let mut out = Vec::new();
    for c in &run.compare {
        let Some((name, addr)) = c.split_once('=') else {
            continue;
        };
        let given = run
            .pid
            .iter()
            .any(|p| p.strip_prefix(name).is_some_and(|r| r.starts_with('=')));
        let port = addr.parse::<SocketAddr>().ok().map(|a| a.port());
        let Some(listener) = port.filter(|_| !given).and_then(procstat::pid_listening_on) else {
            continue;
        };
        match reaper::of(listener) {
            Some(r) => {
                eprintln!("  {name}: CPU of the process tree under pid {r} (the reaper of pid {listener})");
                out.push(format!("{name}={r}"));
            }
            None if procstat::name(listener).as_deref() == Some("sshd") => eprintln!(
                "  {name}: sshd pid {listener} does not run under `sluice-loadtest reaper`: \
                 the CPU of its connections' session processes is lost (loadtest/peers/ssh.sh)"
            ),
            None => {}
        }
    }
    out
}

/// The name of the effective user, from the password database.
fn current_user() -> Option<String> {
    // SAFETY: getpwuid returns null or a pointer to static storage, read here
    // at once, before any other thread of this program looks up a user.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_str()
            .ok()
            .map(str::to_owned)
    }
}

fn run(
    scenario: &str,
    args: RunArgs,
    unit: report::Unit,
    once: impl Fn(SocketAddr, usize, Duration) -> Sample,
) -> anyhow::Result<()> {
    run_with_cpu(scenario, args, unit, procstat::cpu_micros, once)
}

/// `cpu` reads a process's CPU time in microseconds: the process alone, or
/// its whole tree.
fn run_with_cpu(
    scenario: &str,
    args: RunArgs,
    unit: report::Unit,
    cpu: fn(u32) -> Option<u64>,
    once: impl Fn(SocketAddr, usize, Duration) -> Sample,
) -> anyhow::Result<()> {
    let mut endpoints = Vec::new();
    let mut extras: Vec<Vec<u32>> = Vec::new();
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
        let extra: Vec<u32> = args
            .extra_pid
            .iter()
            .filter_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .map(|p| p.parse().context("--extra-pid takes name=PID"))
            .collect::<anyhow::Result<_>>()?;
        if let (Some(pid), false) = (pid, extra.is_empty()) {
            eprintln!("  {name}: CPU of pid {pid} and of {extra:?}");
        }
        extras.push(extra);
        endpoints.push(report::Endpoint::new(name, addr, pid));
    }
    // The endpoint's own process and its extras; `None` if one is gone.
    let cpu_of = |pid: Option<u32>, extra: &[u32]| -> Option<u64> {
        let own = cpu(pid?)?;
        let more: Option<u64> = extra.iter().map(|&p| cpu(p)).sum();
        Some(own + more?)
    };
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
        for (e, extra) in endpoints.iter_mut().zip(&extras) {
            let cpu_before = cpu_of(e.pid, extra);
            let sample = once(e.addr, args.connections, slice);
            let cpu_after = cpu_of(e.pid, extra);
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
