//! Policy decisions: the compiled tables (array index + a few mask tests) against
//! a straightforward baseline that hashes names on every call.

use std::collections::HashMap;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice_config::policy::{kind_index, CompiledPolicy, Statement};

const CFG: &str = r#"
[identity]
issuer = "https://idp.example.com/"
audience = "sluice"
jwks = "file:dev.jwks.json"

[[target]]
name = "orders"
protocol = "postgres"
listen = "127.0.0.1:6432"
upstream = "127.0.0.1:5432"
access = ["sre", "agents"]
approvers = ["dba"]
guardrails = "prod"

[guardrails.prod]
rules = [
  { kinds = ["drop", "truncate"], action = "deny", message = "destructive DDL is blocked" },
  { kinds = ["delete", "update"], unbounded = true, action = "deny", message = "add a WHERE clause" },
  { kinds = ["delete", "update", "alter", "grant", "revoke", "opaque"], action = "approve" },
  { kinds = ["delete"], groups = ["dba"], action = "allow" },
]
"#;

fn bench(c: &mut Criterion) {
    let config = sluice_config::parse(CFG, "bench.toml", |_| None).unwrap();
    let policy = CompiledPolicy::compile(&config).unwrap();
    let groups = policy.groups(&["agents", "dba"]);
    let delete = Statement {
        kind: kind_index("delete").unwrap(),
        unbounded: false,
        opaque: false,
    };
    let select = Statement {
        kind: kind_index("select").unwrap(),
        unbounded: false,
        opaque: false,
    };

    // Baseline: rules looked up by (target name, kind name) in a HashMap and
    // group names compared as strings, as a naive implementation would.
    type Rules<'a> = Vec<(Vec<String>, &'a str)>;
    let mut naive: HashMap<(String, String), Rules> = HashMap::new();
    for (i, r) in config.guardrails["prod"].rules.iter().enumerate() {
        for k in &r.kinds {
            naive
                .entry(("orders".into(), k.clone()))
                .or_default()
                .push((r.groups.clone(), if i == 0 { "deny" } else { "approve" }));
        }
    }
    let caller = ["agents".to_owned(), "dba".to_owned()];

    let mut g = c.benchmark_group("policy_decision");
    g.throughput(Throughput::Elements(1));
    g.bench_function("compiled/delete_dba", |b| {
        b.iter(|| black_box(policy.decide(0, black_box(delete), black_box(groups))))
    });
    g.bench_function("compiled/select", |b| {
        b.iter(|| black_box(policy.decide(0, black_box(select), black_box(groups))))
    });
    g.bench_function("compiled/access_check", |b| {
        b.iter(|| black_box(policy.may_connect(0, black_box(groups))))
    });
    g.bench_function("baseline_hashmap/delete_dba", |b| {
        b.iter(|| {
            let rules = naive.get(&("orders".to_owned(), black_box("delete").to_owned()));
            black_box(rules.and_then(|rs| {
                rs.iter()
                    .find(|(gs, _)| gs.is_empty() || gs.iter().any(|g| caller.contains(g)))
            }))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
