//! Postgres codec: framing and decoding a recorded server stream (rows, errors,
//! notices) and client stream, in bytes/s; baseline: copying the same bytes.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice_protocols::postgres::backend::{self, Backend};
use sluice_protocols::postgres::{frame, frontend};

const BACKEND: &[u8] = include_bytes!("../../protocols/testdata/psql.backend.bin");
const FRONTEND: &[u8] = include_bytes!("../../protocols/testdata/pgbench.frontend.bin");

fn decode_backend(mut rest: &[u8]) -> usize {
    let mut cols = 0;
    while let Ok(Some(f)) = frame(rest, 1 << 30) {
        if let Ok(Backend::DataRow(row)) = backend::parse(f.tag, &rest[f.body()]) {
            cols += row.ranges().count();
        }
        rest = &rest[f.len..];
    }
    cols
}

fn decode_frontend(data: &[u8]) -> usize {
    // Skip the startup packet.
    let mut rest = &data[u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize..];
    let mut n = 0;
    while let Ok(Some(f)) = frame(rest, 1 << 30) {
        n += frontend::parse(f.tag, &rest[f.body()]).is_ok() as usize;
        rest = &rest[f.len..];
    }
    n
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pg_codec");
    g.throughput(Throughput::Bytes(BACKEND.len() as u64));
    g.bench_function("backend_decode", |b| {
        b.iter(|| black_box(decode_backend(black_box(BACKEND))))
    });
    let mut buf = vec![0u8; BACKEND.len()];
    g.bench_function("baseline_memcpy_backend", |b| {
        b.iter(|| {
            buf.copy_from_slice(black_box(BACKEND));
            black_box(buf[0])
        })
    });
    g.throughput(Throughput::Bytes(FRONTEND.len() as u64));
    g.bench_function("frontend_decode", |b| {
        b.iter(|| black_box(decode_frontend(black_box(FRONTEND))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
