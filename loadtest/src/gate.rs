//! The regression gate: this run's ratios (each endpoint against the first,
//! measured side by side, so machine noise mostly cancels) and the gateway's
//! CPU per operation, against a committed baseline of the same scenario.
//!
//! CPU per operation depends on the machine far more than the ratios do (most
//! of it is the kernel's loopback path, several times dearer on some VMs than
//! on others), so a baseline file may hold one report per kind of machine, and
//! the gate compares with the one recorded where the first endpoint (the
//! upstream answering directly) cost about what it costs now.

use std::fmt::Write as _;

use serde_json::Value;

/// `10%`, `10` or `0.1` → 0.1.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("invalid regression limit `{s}` (e.g. 10%)"))?;
    let f = if s.ends_with('%') || v > 1.0 {
        v / 100.0
    } else {
        v
    };
    if !(0.0..1.0).contains(&f) {
        return Err(format!(
            "regression limit `{s}` must be between 0% and 100%"
        ));
    }
    Ok(f)
}

/// Compares `current` (a `--json` report) with `baseline`; returns whether it
/// passes and a table of every compared metric.
pub fn check(current: &Value, baseline: &Value, max: f64) -> (bool, String) {
    let mut ok = true;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gate: {} vs baseline (max regression {:.0}%)\n{:<10} {:<16} {:>12} {:>12} {:>9}  verdict",
        current["scenario"].as_str().unwrap_or("?"),
        max * 100.0,
        "endpoint",
        "metric",
        "baseline",
        "now",
        "change"
    );
    if current["scenario"] != baseline["scenario"] {
        let _ = writeln!(
            out,
            "baseline is for scenario {} — not comparable",
            baseline["scenario"]
        );
        return (false, out);
    }
    let empty = Vec::new();
    let now = current["endpoints"].as_array().unwrap_or(&empty);
    let then = baseline["endpoints"].as_array().unwrap_or(&empty);
    let cpu = |r: &Value| r["cpu_us_per_unit"].as_f64();
    // The first endpoint's CPU there and here, when the baseline is from
    // another kind of machine.
    let other = first_cpus(current, baseline).filter(|&c| !like(c));
    if let Some((was, is)) = other {
        let _ = writeln!(
            out,
            "(the baseline is from another kind of machine: the first endpoint cost {was:.1} \
             µs per operation there, {is:.1} here; record one here with --record)"
        );
    }
    for (i, e) in now.iter().enumerate() {
        let name = e["name"].as_str().unwrap_or("?");
        if e["errors"].as_u64().unwrap_or(0) > 0 {
            ok = false;
            let _ = writeln!(
                out,
                "{name:<10} {:<16} {:>12} {:>12} {:>9}  REGRESSED",
                "errors", 0, e["errors"], ""
            );
        }
        let Some(b) = then.iter().find(|b| b["name"] == e["name"]) else {
            let _ = writeln!(out, "{name:<10} (not in the baseline: not compared)");
            continue;
        };
        // Higher is better for the ratio; lower for CPU per operation.
        let mut metrics: Vec<(&str, bool, Option<f64>, Option<f64>)> = Vec::new();
        if i > 0 {
            metrics.push(("ratio", true, b["ratio"].as_f64(), e["ratio"].as_f64()));
            // Against a baseline from another kind of machine, CPU is compared
            // as a multiple of the first endpoint's (the better of two rough
            // measures: the gateway's own work does not scale with the kernel).
            let metric = match other {
                Some((was, is)) => (
                    "cpu_vs_first",
                    false,
                    cpu(b).map(|c| c / was),
                    cpu(e).map(|c| c / is),
                ),
                None => ("cpu_us_per_unit", false, cpu(b), cpu(e)),
            };
            metrics.push(metric);
        }
        for (metric, higher_is_better, was, is) in metrics {
            let (Some(was), Some(is)) = (was, is) else {
                continue;
            };
            let change = if was.abs() > f64::EPSILON {
                is / was - 1.0
            } else {
                0.0
            };
            let regressed = if higher_is_better {
                is < was * (1.0 - max)
            } else {
                is > was * (1.0 + max)
            };
            ok &= !regressed;
            let _ = writeln!(
                out,
                "{name:<10} {metric:<16} {was:>12.3} {is:>12.3} {:>+8.1}%  {}",
                change * 100.0,
                if regressed { "REGRESSED" } else { "ok" }
            );
        }
    }
    (ok, out)
}

/// The first endpoint's CPU per operation, when it is a usable measure of the
/// machine: a direct PostgreSQL's postmaster, say, spends next to nothing
/// itself (its backends do the work), and a clock tick more or less would
/// swing the comparison.
fn first_cpu(report: &Value) -> Option<(&str, f64)> {
    let first = report["endpoints"].as_array()?.first()?;
    let cpu = first["cpu_us_per_unit"].as_f64()?;
    (cpu.is_finite() && cpu >= 1.0).then(|| (first["name"].as_str().unwrap_or(""), cpu))
}

/// How much dearer one machine's first endpoint may be than another's for
/// the two to count as the same kind.
const LIKE: f64 = 1.5;

/// The first endpoint's CPU per operation in `baseline` and in `current`
/// (`(was, is)`), when both measure the machine and name the same endpoint.
fn first_cpus(current: &Value, baseline: &Value) -> Option<(f64, f64)> {
    match (first_cpu(baseline), first_cpu(current)) {
        (Some((n1, was)), Some((n2, is))) if n1 == n2 => Some((was, is)),
        _ => None,
    }
}

/// Whether two machines whose first endpoint cost `was` and `is` are of the
/// same kind (CPU compared as measured).
fn like((was, is): (f64, f64)) -> bool {
    (is / was).max(was / is) <= LIKE
}

/// Of a baseline file's reports (one report, or a list of them, one per kind
/// of machine), the one to compare `current` with: of the same scenario, the
/// one whose first endpoint cost nearest to what it costs now, else the last.
pub fn pick<'a>(current: &Value, baseline: &'a Value) -> &'a Value {
    let Some(all) = baseline.as_array() else {
        return baseline;
    };
    let same: Vec<&Value> = all
        .iter()
        .filter(|b| b["scenario"] == current["scenario"])
        .collect();
    let distance =
        |b: &Value| first_cpus(current, b).map_or(f64::INFINITY, |(was, is)| (is / was).ln().abs());
    same.iter()
        .copied()
        .filter(|b| distance(b).is_finite())
        .min_by(|a, b| distance(a).total_cmp(&distance(b)))
        .or(same.last().copied())
        .or(all.last())
        .unwrap_or(baseline)
}

/// `current` recorded into a baseline file's reports (`existing`, if any): it
/// replaces the report of the same scenario from a machine like this one and
/// is added beside those from other kinds of machine.
pub fn record(current: &Value, existing: Option<&Value>) -> Value {
    let mut all: Vec<Value> = match existing {
        Some(Value::Array(a)) => a.clone(),
        Some(v @ Value::Object(_)) => vec![v.clone()],
        _ => Vec::new(),
    };
    all.retain(|b| {
        b["scenario"] != current["scenario"] || !first_cpus(current, b).is_some_and(like)
    });
    all.push(current.clone());
    Value::Array(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(ratio: f64, cpu: f64) -> Value {
        json!({ "scenario": "http-json", "endpoints": [
            { "name": "direct", "ratio": 1.0, "errors": 0, "cpu_us_per_unit": null },
            { "name": "sluice", "ratio": ratio, "errors": 0, "cpu_us_per_unit": cpu },
        ]})
    }

    #[test]
    fn passes_within_the_limit_and_fails_beyond_it() {
        let base = report(0.5, 40.0);
        assert!(check(&report(0.47, 43.0), &base, 0.10).0);
        let (ok, table) = check(&report(0.40, 40.0), &base, 0.10);
        assert!(
            !ok && table.contains("ratio") && table.contains("REGRESSED"),
            "{table}"
        );
        let (ok, table) = check(&report(0.5, 48.0), &base, 0.10);
        assert!(!ok && table.contains("cpu_us_per_unit"), "{table}");
        let mut errors = report(0.5, 40.0);
        errors["endpoints"][1]["errors"] = json!(3);
        assert!(!check(&errors, &base, 0.10).0);
        let mut other = base.clone();
        other["scenario"] = json!("tcp-rr");
        assert!(!check(&report(0.5, 40.0), &other, 0.10).0);
    }

    fn run(direct: Option<f64>, sluice: f64) -> Value {
        json!({ "scenario": "tcp-rr", "endpoints": [
            { "name": "direct", "ratio": 1.0, "errors": 0, "cpu_us_per_unit": direct },
            { "name": "sluice", "ratio": 0.3, "errors": 0, "cpu_us_per_unit": sluice },
        ]})
    }

    /// A baseline file holds one report per kind of machine; each run is
    /// gated on the one from a machine like its own, CPU as measured.
    #[test]
    fn each_kind_of_machine_is_gated_on_its_own_baseline() {
        let file = json!([run(Some(3.0), 12.0), run(Some(12.0), 36.0)]);
        // A fast machine: its own baseline; doubling fails.
        let fast = pick(&run(Some(3.2), 13.0), &file);
        assert_eq!(fast["endpoints"][1]["cpu_us_per_unit"], 12.0);
        assert!(check(&run(Some(3.2), 13.0), fast, 0.5).0);
        let (ok, table) = check(&run(Some(3.2), 24.0), fast, 0.5);
        assert!(!ok && table.contains("cpu_us_per_unit"), "{table}");
        // A slow one: its own; as dear as it always is there, passes.
        let slow = pick(&run(Some(11.0), 38.0), &file);
        assert_eq!(slow["endpoints"][1]["cpu_us_per_unit"], 36.0);
        assert!(check(&run(Some(11.0), 38.0), slow, 0.5).0);
        assert!(!check(&run(Some(11.0), 72.0), slow, 0.5).0);
    }

    /// Against a baseline from another kind of machine, CPU is compared as a
    /// multiple of the first endpoint's, and the table says so.
    #[test]
    fn another_kind_of_machine_is_compared_relative_to_the_first_endpoint() {
        let base = run(Some(3.0), 12.0);
        let (ok, table) = check(&run(Some(9.0), 36.0), &base, 0.5);
        assert!(
            ok && table.contains("cpu_vs_first") && table.contains("--record"),
            "{table}"
        );
        assert!(!check(&run(Some(9.0), 72.0), &base, 0.5).0);
    }

    /// A first endpoint that spends next to nothing (a postmaster) or whose
    /// CPU is unknown tells nothing of the machine: CPU as measured, and no
    /// division by zero.
    #[test]
    fn an_idle_or_unknown_first_endpoint_compares_cpu_as_measured() {
        for direct in [Some(0.0), Some(0.1), None] {
            let base = run(direct, 12.0);
            assert!(check(&run(direct, 13.0), &base, 0.5).0);
            let (ok, table) = check(&run(direct, 24.0), &base, 0.5);
            assert!(
                !ok && table.contains("cpu_us_per_unit"),
                "{direct:?}: {table}"
            );
        }
    }

    /// Recording replaces the report from a machine like this one and keeps
    /// those from other kinds; a single-report file becomes a list.
    #[test]
    fn recording_keeps_one_report_per_kind_of_machine() {
        let fast = run(Some(3.0), 12.0);
        let file = record(&run(Some(12.0), 36.0), Some(&fast));
        assert_eq!(file.as_array().map(Vec::len), Some(2));
        let file = record(&run(Some(11.0), 35.0), Some(&file));
        let all = file.as_array().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], fast);
        assert_eq!(all[1]["endpoints"][1]["cpu_us_per_unit"], 35.0);
        assert_eq!(record(&fast, None), json!([fast]));
    }

    #[test]
    fn limits_parse() {
        assert_eq!(parse_fraction("10%"), Ok(0.1));
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert_eq!(parse_fraction("50"), Ok(0.5));
        assert!(parse_fraction("150%").is_err() && parse_fraction("x").is_err());
    }
}
