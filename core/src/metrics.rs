//! Per-shard metrics: plain `Cell` counters and hdrhistogram latencies owned by one
//! shard (no atomics, no locks on the data path), snapshotted and merged only when
//! `/metrics` is scraped. The SSH endpoint, on threads of its own, counts in
//! atomics ([`SshMetrics`]).

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

/// What went wrong, for `sluice_errors_total{kind=...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `accept(2)` failed (e.g. out of file descriptors).
    Accept,
    /// The upstream could not be reached in time.
    UpstreamConnect,
    /// An established upstream connection failed.
    UpstreamIo,
    /// An established client connection failed.
    ClientIo,
    /// A malformed request to the admin listener.
    AdminRequest,
    /// A session task panicked (a bug); the session was closed, the shard kept going.
    Panic,
    /// Commands refused because the audit log could not record them.
    Audit,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Accept,
        ErrorKind::UpstreamConnect,
        ErrorKind::UpstreamIo,
        ErrorKind::ClientIo,
        ErrorKind::AdminRequest,
        ErrorKind::Panic,
        ErrorKind::Audit,
    ];

    /// Whose fault errors of this kind are: `client`, `upstream` or
    /// `internal` (as `error::Source` names them).
    pub fn source_label(self) -> &'static str {
        match self {
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamIo => "upstream",
            ErrorKind::ClientIo | ErrorKind::AdminRequest => "client",
            ErrorKind::Accept | ErrorKind::Panic | ErrorKind::Audit => "internal",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Accept => "accept",
            ErrorKind::UpstreamConnect => "upstream_connect",
            ErrorKind::UpstreamIo => "upstream_io",
            ErrorKind::ClientIo => "client_io",
            ErrorKind::AdminRequest => "admin_request",
            ErrorKind::Panic => "panic",
            ErrorKind::Audit => "audit",
        }
    }
}

#[derive(Default)]
pub struct TargetMetrics {
    pub open: Cell<u64>,
    pub total: Cell<u64>,
    pub bytes_from_client: Cell<u64>,
    pub bytes_from_upstream: Cell<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

impl TargetMetrics {
    pub fn opened(&self) {
        bump(&self.open, 1);
        bump(&self.total, 1);
    }
    pub fn closed(&self) {
        self.open.set(self.open.get().saturating_sub(1));
    }
}

/// Latency histograms record microseconds, 1 µs to 1 hour, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

pub struct ShardMetrics {
    pub targets: Vec<(String, TargetMetrics)>,
    errors: [Cell<u64>; ErrorKind::ALL.len()],
    sessions: RefCell<Histogram<u64>>,
    commands: RefCell<Histogram<u64>>,
}

impl ShardMetrics {
    pub fn new(target_names: impl IntoIterator<Item = String>) -> Self {
        ShardMetrics {
            targets: target_names
                .into_iter()
                .map(|n| (n, TargetMetrics::default()))
                .collect(),
            errors: Default::default(),
            sessions: RefCell::new(histogram()),
            commands: RefCell::new(histogram()),
        }
    }

    pub fn target(&self, index: usize) -> &TargetMetrics {
        &self.targets[index].1
    }

    pub fn error(&self, kind: ErrorKind) {
        bump(&self.errors[kind as usize], 1);
    }

    pub fn session_ended(&self, duration: Duration) {
        record(&self.sessions, duration);
    }

    pub fn command_done(&self, duration: Duration) {
        record(&self.commands, duration);
    }

    pub fn snapshot(&self, shard: usize) -> Snapshot {
        Snapshot {
            shard,
            targets: self
                .targets
                .iter()
                .map(|(name, t)| TargetSnapshot {
                    name: name.clone(),
                    open: t.open.get(),
                    total: t.total.get(),
                    bytes_from_client: t.bytes_from_client.get(),
                    bytes_from_upstream: t.bytes_from_upstream.get(),
                })
                .collect(),
            errors: ErrorKind::ALL.map(|k| self.errors[k as usize].get()),
            sessions: self.sessions.borrow().clone(),
            commands: self.commands.borrow().clone(),
        }
    }
}

fn record(h: &RefCell<Histogram<u64>>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
    // Saturating record cannot fail inside the bounds clamped above.
    h.borrow_mut().saturating_record(us);
}

/// One shard's metrics at scrape time (owned, so it can cross threads).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub shard: usize,
    pub targets: Vec<TargetSnapshot>,
    pub errors: [u64; ErrorKind::ALL.len()],
    pub sessions: Histogram<u64>,
    pub commands: Histogram<u64>,
}

#[derive(Debug, Clone)]
pub struct TargetSnapshot {
    pub name: String,
    pub open: u64,
    pub total: u64,
    pub bytes_from_client: u64,
    pub bytes_from_upstream: u64,
}

/// Renders merged snapshots in the Prometheus text exposition format (0.0.4).
pub fn render(snapshots: &[Snapshot], uptime: Duration) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    let _ = writeln!(
        o,
        "# HELP sluice_build_info Sluice version.\n# TYPE sluice_build_info gauge"
    );
    let _ = writeln!(
        o,
        "sluice_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(o, "# HELP sluice_uptime_seconds Seconds since the gateway started.\n# TYPE sluice_uptime_seconds gauge");
    let _ = writeln!(o, "sluice_uptime_seconds {:.3}", uptime.as_secs_f64());
    let _ = writeln!(
        o,
        "# HELP sluice_shards Shards answering this scrape.\n# TYPE sluice_shards gauge"
    );
    let _ = writeln!(o, "sluice_shards {}", snapshots.len());

    type Field = fn(&TargetSnapshot) -> u64;
    let series: [(&str, &str, &str, Field); 2] = [
        (
            "sluice_connections_open",
            "gauge",
            "Open client connections.",
            |t| t.open,
        ),
        (
            "sluice_connections_total",
            "counter",
            "Client connections accepted.",
            |t| t.total,
        ),
    ];
    for (name, kind, help, field) in series {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in snapshots {
            for t in &s.targets {
                let _ = writeln!(
                    o,
                    "{name}{{target=\"{}\",shard=\"{}\"}} {}",
                    t.name,
                    s.shard,
                    field(t)
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP sluice_bytes_total Bytes relayed, by direction.\n# TYPE sluice_bytes_total counter"
    );
    for s in snapshots {
        for t in &s.targets {
            for (dir, v) in [
                ("client_to_upstream", t.bytes_from_client),
                ("upstream_to_client", t.bytes_from_upstream),
            ] {
                let _ = writeln!(
                    o,
                    "sluice_bytes_total{{target=\"{}\",shard=\"{}\",direction=\"{dir}\"}} {v}",
                    t.name, s.shard
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP sluice_errors_total Errors, by kind and whose fault they are (client, upstream, internal).\n# TYPE sluice_errors_total counter"
    );
    for s in snapshots {
        for k in ErrorKind::ALL {
            let _ = writeln!(
                o,
                "sluice_errors_total{{kind=\"{}\",source=\"{}\",shard=\"{}\"}} {}",
                k.label(),
                k.source_label(),
                s.shard,
                s.errors[k as usize]
            );
        }
    }
    type Pick = fn(&Snapshot) -> &Histogram<u64>;
    let hists: [(&str, &str, Pick); 2] = [
        (
            "sluice_session_duration_seconds",
            "Client session duration.",
            |s| &s.sessions,
        ),
        (
            "sluice_command_duration_seconds",
            "Command latency through the gateway.",
            |s| &s.commands,
        ),
    ];
    for (name, help, pick) in hists {
        let mut merged = histogram();
        for s in snapshots {
            // Same bounds everywhere, so adding cannot fail.
            let _ = merged.add(pick(s));
        }
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} summary");
        for q in [0.5, 0.9, 0.99, 0.999] {
            let v = if merged.is_empty() {
                0
            } else {
                merged.value_at_quantile(q)
            };
            let _ = writeln!(o, "{name}{{quantile=\"{q}\"}} {:.6}", v as f64 / 1e6);
        }
        let sum: f64 = merged
            .iter_recorded()
            .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
            .sum();
        let _ = writeln!(o, "{name}_sum {:.6}", sum / 1e6);
        let _ = writeln!(o, "{name}_count {}", merged.len());
    }
    out
}

/// The SSH endpoint's metrics: it runs on its own threads beside the shards,
/// so its counters are atomics, one set per target, found once per connection.
#[derive(Default)]
pub struct SshMetrics {
    targets: std::sync::Mutex<std::collections::BTreeMap<String, Arc<SshTarget>>>,
}

/// What the SSH endpoint asked of a channel, for `sluice_ssh_requests_total`.
pub const SSH_REQUESTS: [&str; 6] = ["exec", "shell", "sftp", "forward", "pty", "shell-line"];
/// What became of it (`observed`: a command read off a shell's screen).
pub const SSH_DECISIONS: [&str; 4] = ["allow", "deny", "approve", "observed"];

#[derive(Default)]
pub struct SshTarget {
    pub open: AtomicU64,
    pub total: AtomicU64,
    pub refused_logins: AtomicU64,
    pub bytes_from_client: AtomicU64,
    pub bytes_from_upstream: AtomicU64,
    requests: [[AtomicU64; SSH_DECISIONS.len()]; SSH_REQUESTS.len()],
}

impl SshTarget {
    /// Counts one request; names outside the lists above are not counted.
    pub fn request(&self, request: &str, decision: &str) {
        let r = SSH_REQUESTS.iter().position(|x| *x == request);
        let d = SSH_DECISIONS.iter().position(|x| *x == decision);
        if let (Some(r), Some(d)) = (r, d) {
            self.requests[r][d].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn bytes(&self, from_client: u64, from_upstream: u64) {
        if from_client > 0 {
            self.bytes_from_client
                .fetch_add(from_client, Ordering::Relaxed);
        }
        if from_upstream > 0 {
            self.bytes_from_upstream
                .fetch_add(from_upstream, Ordering::Relaxed);
        }
    }
}

impl SshMetrics {
    /// The target's counters, made on first use.
    pub fn target(&self, name: &str) -> Arc<SshTarget> {
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        targets.entry(name.to_owned()).or_default().clone()
    }

    /// Appends the SSH series to a `/metrics` page.
    pub fn render(&self, o: &mut String) {
        let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        type Field = fn(&SshTarget) -> &AtomicU64;
        let series: [(&str, &str, &str, Field); 3] = [
            (
                "sluice_ssh_connections_open",
                "gauge",
                "Open SSH client connections.",
                |t| &t.open,
            ),
            (
                "sluice_ssh_connections_total",
                "counter",
                "SSH client connections accepted.",
                |t| &t.total,
            ),
            (
                "sluice_ssh_logins_refused_total",
                "counter",
                "SSH logins refused (a bad token, a refused certificate, no access).",
                |t| &t.refused_logins,
            ),
        ];
        for (name, kind, help, field) in series {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (target, t) in targets.iter() {
                let _ = writeln!(o, "{name}{{target=\"{target}\"}} {}", load(field(t)));
            }
        }
        let name = "sluice_ssh_bytes_total";
        let _ = writeln!(
            o,
            "# HELP {name} Bytes relayed on SSH channels, by direction.\n# TYPE {name} counter"
        );
        for (target, t) in targets.iter() {
            for (dir, v) in [
                ("client_to_upstream", &t.bytes_from_client),
                ("upstream_to_client", &t.bytes_from_upstream),
            ] {
                let _ = writeln!(
                    o,
                    "{name}{{target=\"{target}\",direction=\"{dir}\"}} {}",
                    load(v)
                );
            }
        }
        let name = "sluice_ssh_requests_total";
        let _ = writeln!(
            o,
            "# HELP {name} SSH channel requests (exec, shell, sftp, forwarding) and commands read off shells, by decision.\n# TYPE {name} counter"
        );
        for (target, t) in targets.iter() {
            for (r, request) in SSH_REQUESTS.iter().enumerate() {
                for (d, decision) in SSH_DECISIONS.iter().enumerate() {
                    let v = load(&t.requests[r][d]);
                    if v > 0 {
                        let _ = writeln!(
                            o,
                            "{name}{{target=\"{target}\",request=\"{request}\",decision=\"{decision}\"}} {v}"
                        );
                    }
                }
            }
        }
    }
}
