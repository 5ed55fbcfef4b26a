//! Per-shard metrics: plain `Cell` counters and hdrhistogram latencies owned by one
//! shard (no atomics, no locks on the data path), snapshotted and merged only when
//! `/metrics` is scraped.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
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
