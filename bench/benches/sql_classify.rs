//! SQL classification: ns per statement for short OLTP statements and a 10 KB
//! statement, uncached and through the per-shard cache; baseline: one memchr pass
//! over the same bytes (the floor any lexer pays).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice::policy::cache::SqlCache;
use sluice_protocols::sql::{Classifier, Dialect};

fn inputs() -> Vec<(&'static str, String)> {
    let big = format!(
        "SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id IN ({}) AND o.note <> 'x;y' -- trailing\n",
        (0..2500).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
    );
    assert!(big.len() > 10_000);
    vec![
        ("point_select", "SELECT abalance FROM pgbench_accounts WHERE aid = $1".to_owned()),
        ("update", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2".to_owned()),
        ("insert", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)".to_owned()),
        ("cte_delete", "WITH gone AS (DELETE FROM orders WHERE id = $1 RETURNING *) SELECT count(*) FROM gone".to_owned()),
        ("10KB", big),
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sql_classify");
    let mut classifier = Classifier::new();
    let mut out = Vec::new();
    let mut cache = SqlCache::default();
    for (name, sql) in inputs() {
        let sql = sql.as_bytes();
        g.throughput(Throughput::Bytes(sql.len() as u64));
        g.bench_function(format!("uncached/{name}"), |b| {
            b.iter(|| {
                classifier.classify(black_box(sql), Dialect::Postgres, &mut out);
                black_box(out.len())
            })
        });
        cache.classify(sql, Dialect::Postgres);
        g.bench_function(format!("cache_hit/{name}"), |b| {
            b.iter(|| black_box(cache.classify(black_box(sql), Dialect::Postgres).len()))
        });
        let mut toks = Vec::new();
        g.bench_function(format!("lex_only/{name}"), |b| {
            b.iter(|| {
                sluice_protocols::sql::lexer::lex(
                    black_box(sql),
                    sluice_protocols::sql::lexer::Options::new(Dialect::Postgres),
                    &mut toks,
                )
                .unwrap();
                black_box(toks.len())
            })
        });
        g.bench_function(format!("baseline_memchr/{name}"), |b| {
            b.iter(|| black_box(memchr_count(black_box(sql))))
        });
    }
    g.finish();
}

fn memchr_count(sql: &[u8]) -> usize {
    sql.iter().filter(|&&b| b == b';' || b == b'\'').count()
}

criterion_group!(benches, bench);
criterion_main!(benches);
