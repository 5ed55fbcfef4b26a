//! The regression gate: this run's ratios (each endpoint against the first,
//! measured side by side, so machine noise mostly cancels) and the gateway's
//! CPU per operation (as a multiple of the first endpoint's, for the same
//! reason), against a committed baseline of the same scenario.

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
        // Higher is better for the ratio; lower for CPU per operation. CPU per
        // operation is compared as a multiple of the first endpoint's (the
        // upstream answering directly, measured in the same run) when both
        // runs have it: most of either is the kernel's loopback path, whose
        // cost differs several times between machines, so absolute figures
        // recorded on one machine gate another on its kernel, not on Sluice.
        let cpu = |r: &Value| r["cpu_us_per_unit"].as_f64();
        let relative = |r: &Value, first: Option<&Value>| Some(cpu(r)? / cpu(first?)?);
        let mut metrics: Vec<(&str, bool, Option<f64>, Option<f64>)> = Vec::new();
        if i > 0 {
            metrics.push(("ratio", true, b["ratio"].as_f64(), e["ratio"].as_f64()));
            let (was, is) = (relative(b, then.first()), relative(e, now.first()));
            if was.is_some() && is.is_some() {
                metrics.push(("cpu_vs_first", false, was, is));
            } else {
                metrics.push(("cpu_us_per_unit", false, cpu(b), cpu(e)));
            }
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

    /// With the first endpoint's CPU in both runs, the gateway's CPU is
    /// compared as a multiple of it: a machine whose kernel makes every
    /// operation three times dearer passes, the gateway alone doubling fails.
    #[test]
    fn cpu_is_compared_against_the_first_endpoint_when_both_runs_have_it() {
        let run = |direct: f64, sluice: f64| {
            json!({ "scenario": "tcp-rr", "endpoints": [
                { "name": "direct", "ratio": 1.0, "errors": 0, "cpu_us_per_unit": direct },
                { "name": "sluice", "ratio": 0.3, "errors": 0, "cpu_us_per_unit": sluice },
            ]})
        };
        let base = run(3.0, 12.0);
        let (ok, table) = check(&run(9.0, 36.0), &base, 0.5);
        assert!(ok && table.contains("cpu_vs_first"), "{table}");
        let (ok, table) = check(&run(3.0, 24.0), &base, 0.5);
        assert!(!ok && table.contains("REGRESSED"), "{table}");
    }

    #[test]
    fn limits_parse() {
        assert_eq!(parse_fraction("10%"), Ok(0.1));
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert_eq!(parse_fraction("50"), Ok(0.5));
        assert!(parse_fraction("150%").is_err() && parse_fraction("x").is_err());
    }
}
