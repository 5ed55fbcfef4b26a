//! Criterion benchmarks of Sluice's hot-path pieces (see `benches/`). Each group sets
//! its throughput and runs a competing baseline on the same input in the same run.
//!
//! Run with `cargo bench -p sluice-bench`; one group: `cargo bench -p sluice-bench --bench http_head`.
