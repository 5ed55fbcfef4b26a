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

mod procstat;
mod report;
mod tcp;

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
}

#[derive(Subcommand)]
enum Command {
    /// Bulk throughput through an echo upstream (MiB/s echoed, CPU µs per MiB).
    TcpStream(RunArgs),
    /// 64-byte request/response round trips (ops/s, latency, CPU µs per op).
    TcpRr(RunArgs),
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
    }
}

fn run(
    scenario: &str,
    args: RunArgs,
    unit: report::Unit,
    once: fn(SocketAddr, usize, Duration) -> Sample,
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
    if let Some(path) = args.json {
        std::fs::write(
            &path,
            report::json(scenario, unit, &args.connections, &endpoints),
        )
        .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
