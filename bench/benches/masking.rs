//! Masker throughput in bytes/s on three inputs (no PII; realistic rows with one
//! entity per ~200 bytes; dense PII), against the shapes of every built-in
//! detector as one regex alternation pass (find only: no validation, no masking)
//! and against memcpy of the bytes.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice_masking::{Detector, Masker, Profile};

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let plain = "order 1842 shipped to warehouse B in the morning; status ok, quantity 12, next check tomorrow. ";
    let no_pii = plain.repeat(11_000).into_bytes();
    let mut realistic = Vec::new();
    let mut dense = Vec::new();
    for i in 0..5_000u32 {
        realistic.extend_from_slice(plain.as_bytes());
        realistic.extend_from_slice(plain.as_bytes());
        let entity = match i % 4 {
            0 => format!("customer{i}@example.com "),
            1 => "card 4111 1111 1111 1111 ".to_owned(),
            2 => format!("ssn 078-05-{:04} ", 1000 + i % 9000),
            _ => format!("call +1 415 555 {:04} ", i % 10_000),
        };
        realistic.extend_from_slice(entity.as_bytes());
        dense
            .extend_from_slice(format!("{entity}u{i}@example.org 5500-0000-0000-0004 ").as_bytes());
    }
    vec![
        ("no_pii", no_pii),
        ("realistic", realistic),
        ("dense", dense),
    ]
}

fn bench(c: &mut Criterion) {
    let names: Vec<&str> = Detector::ALL.iter().map(|d| d.name()).collect();
    let mut masker = Masker::new(Profile::new(&names, &[]).unwrap());
    // Every built-in detector's shape, find only (no validation, no masking).
    let regex = regex::bytes::Regex::new(concat!(
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
        r"|\b(?:\d[ -]?){13,19}\b",
        r"|\b\d{3}-\d{2}-\d{4}\b",
        r"|\+\d[\d ().-]{7,18}\d",
        r"|\(\d{3}\) \d{3}-\d{4}|\b\d{3}[-.]\d{3}[-.]\d{4}\b",
        r"|\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b",
        r"|\b(?:\d{1,3}\.){3}\d{1,3}\b",
        r"|\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{0,4}\b",
        r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
        r"|eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
        r"|-----BEGIN [A-Z ]*PRIVATE KEY-----",
        r"|[Bb]earer [A-Za-z0-9._~+/=-]{16,}",
        r"|\b(?:sk_live_|sk_test_|rk_live_|pk_live_|gh[pousr]_|github_pat_|xox[bpar]-|AIza|glpat-|npm_)[A-Za-z0-9_-]{16,}",
    ))
    .unwrap();
    let mut g = c.benchmark_group("masking");
    for (name, input) in inputs() {
        g.throughput(Throughput::Bytes(input.len() as u64));
        // Masking writes in place: each iteration gets a fresh copy of the
        // input, made outside the timed part (the regex baseline is not
        // charged for a copy either).
        g.bench_function(format!("sluice_mask_in_place/{name}"), |b| {
            b.iter_batched_ref(
                || input.clone(),
                |buf| black_box(masker.mask_value(buf, None)),
                BatchSize::PerIteration,
            )
        });
        let mut buf = input.clone();
        g.bench_function(format!("baseline_regex_find/{name}"), |b| {
            b.iter(|| black_box(regex.find_iter(black_box(&input)).count()))
        });
        g.bench_function(format!("baseline_memcpy/{name}"), |b| {
            b.iter(|| {
                buf.copy_from_slice(black_box(&input));
                black_box(buf[0])
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
