//! Aggregation per endpoint and the side-by-side table / JSON report.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::Sample;

#[derive(Clone, Copy)]
pub enum Unit {
    /// Bytes moved, shown as MiB/s; CPU per MiB.
    MiB,
    /// Operations, shown as ops/s; CPU per op.
    Ops,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::MiB => "MiB/s",
            Unit::Ops => "ops/s",
        }
    }
    fn per(self) -> &'static str {
        match self {
            Unit::MiB => "MiB",
            Unit::Ops => "op",
        }
    }
    fn scale(self) -> f64 {
        match self {
            Unit::MiB => 1024.0 * 1024.0,
            Unit::Ops => 1.0,
        }
    }
    pub fn rate(self, s: &Sample) -> f64 {
        s.ops as f64 / self.scale() / s.elapsed.as_secs_f64().max(1e-9)
    }
}

pub struct Endpoint {
    pub name: String,
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    pub ops: u64,
    pub elapsed: Duration,
    pub errors: u64,
    pub cpu_micros: u64,
    pub latency: Histogram<u64>,
    /// `pg-write`: the operations held for approval (also in `ops` and `latency`).
    pub held: Option<Histogram<u64>>,
}

impl Endpoint {
    pub fn new(name: &str, addr: SocketAddr, pid: Option<u32>) -> Self {
        Endpoint {
            name: name.to_owned(),
            addr,
            pid,
            ops: 0,
            elapsed: Duration::ZERO,
            errors: 0,
            cpu_micros: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            held: None,
        }
    }

    pub fn add(&mut self, s: Sample) {
        self.ops += s.ops;
        self.elapsed += s.elapsed;
        self.errors += s.errors;
        let _ = self.latency.add(&s.latency);
        if let Some(h) = s.held {
            match &mut self.held {
                Some(held) => {
                    let _ = held.add(&h);
                }
                None => self.held = Some(h),
            }
        }
    }

    fn rate(&self, unit: Unit) -> f64 {
        self.ops as f64 / unit.scale() / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU microseconds of the endpoint's process per MiB or per op.
    fn cpu_per(&self, unit: Unit) -> Option<f64> {
        let units = self.ops as f64 / unit.scale();
        (self.pid.is_some() && units > 0.0).then(|| self.cpu_micros as f64 / units)
    }

    fn q(&self, q: f64) -> Option<u64> {
        quantile(&self.latency, q)
    }

    /// The held operations' latencies, their rate and the other operations' rate.
    fn held(&self) -> Option<(&Histogram<u64>, f64, f64)> {
        let h = self.held.as_ref()?;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let unheld = self.ops.saturating_sub(h.len());
        Some((h, h.len() as f64 / secs, unheld as f64 / secs))
    }
}

fn quantile(h: &Histogram<u64>, q: f64) -> Option<u64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q))
}

fn us(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v}"))
}

pub fn table(scenario: &str, unit: Unit, endpoints: &[Endpoint]) -> String {
    let base = endpoints[0].rate(unit);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{scenario}\n{:<10} {:>12} {:>8} {:>8} {:>8} {:>8} {:>7} {:>14} {:>7}",
        "endpoint",
        unit.label(),
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "errors",
        format!("cpu µs/{}", unit.per()),
        "ratio"
    );
    for e in endpoints {
        let _ = writeln!(
            out,
            "{:<10} {:>12.1} {:>8} {:>8} {:>8} {:>8} {:>7} {:>14} {:>7.3}",
            e.name,
            e.rate(unit),
            us(e.q(0.5)),
            us(e.q(0.99)),
            us(e.q(0.999)),
            us((!e.latency.is_empty()).then(|| e.latency.max())),
            e.errors,
            e.cpu_per(unit)
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}")),
            e.rate(unit) / base.max(1e-9),
        );
    }
    if endpoints.iter().any(|e| e.held.is_some()) {
        let _ = writeln!(
            out,
            "\n{scenario}: held for approval (sent to completed)\n{:<10} {:>12} {:>8} {:>8} {:>8} {:>8} {:>14}",
            "endpoint", "held ops/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "unheld ops/s"
        );
        for e in endpoints {
            let Some((h, held, unheld)) = e.held() else {
                continue;
            };
            let _ = writeln!(
                out,
                "{:<10} {:>12.1} {:>8} {:>8} {:>8} {:>8} {:>14.1}",
                e.name,
                held,
                us(quantile(h, 0.5)),
                us(quantile(h, 0.99)),
                us(quantile(h, 0.999)),
                us((!h.is_empty()).then(|| h.max())),
                unheld,
            );
        }
    }
    out
}

pub fn json(scenario: &str, unit: Unit, connections: &usize, endpoints: &[Endpoint]) -> String {
    let base = endpoints[0].rate(unit);
    let rows: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "addr": e.addr.to_string(),
                "pid": e.pid,
                "rate": e.rate(unit),
                "unit": unit.label(),
                "ratio": e.rate(unit) / base.max(1e-9),
                "p50_us": e.q(0.5),
                "p99_us": e.q(0.99),
                "p999_us": e.q(0.999),
                "max_us": (!e.latency.is_empty()).then(|| e.latency.max()),
                "errors": e.errors,
                "cpu_us_per_unit": e.cpu_per(unit),
                "seconds": e.elapsed.as_secs_f64(),
                "held": e.held().map(|(h, held, unheld)| {
                    serde_json::json!({
                        "ops": h.len(),
                        "rate": held,
                        "unheld_rate": unheld,
                        "p50_us": quantile(h, 0.5),
                        "p99_us": quantile(h, 0.99),
                        "p999_us": quantile(h, 0.999),
                        "max_us": (!h.is_empty()).then(|| h.max()),
                    })
                }),
            })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "scenario": scenario,
        "connections": connections,
        "endpoints": rows,
    }))
    .expect("json")
}
