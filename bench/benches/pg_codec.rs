//! Postgres codec: framing and decoding a recorded server stream (rows, errors,
//! notices) and client stream, in bytes/s and per message; encoding the
//! messages the gateway writes itself (queries, parses, errors, notices); and
//! the HTTP codec's response heads and chunked bodies. Baseline in each group:
//! copying the same bytes.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice_protocols::http::{self, ChunkedDecoder, Header};
use sluice_protocols::postgres::backend::{self, Backend};
use sluice_protocols::postgres::encode::{self, Report};
use sluice_protocols::postgres::{frame, frontend, Framed};

const BACKEND: &[u8] = include_bytes!("../../protocols/testdata/psql.backend.bin");
const FRONTEND: &[u8] = include_bytes!("../../protocols/testdata/pgbench.frontend.bin");

fn decode_backend(mut rest: &[u8]) -> usize {
    let mut cols = 0;
    while let Ok(Framed::Complete(f)) = frame(rest, 1 << 30) {
        if let Ok(Backend::DataRow(row)) = backend::parse(f.tag, &rest[f.body()]) {
            cols += row.ranges().count();
        }
        rest = &rest[f.len..];
    }
    cols
}

fn messages(mut rest: &[u8]) -> u64 {
    let mut n = 0;
    while let Ok(Framed::Complete(f)) = frame(rest, 1 << 30) {
        n += 1;
        rest = &rest[f.len..];
    }
    n
}

fn frontend_messages(data: &[u8]) -> &[u8] {
    // Skip the startup packet.
    &data[u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize..]
}

fn decode_frontend(mut rest: &[u8]) -> usize {
    let mut n = 0;
    while let Ok(Framed::Complete(f)) = frame(rest, 1 << 30) {
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
    let front = frontend_messages(FRONTEND);
    g.throughput(Throughput::Bytes(front.len() as u64));
    g.bench_function("frontend_decode", |b| {
        b.iter(|| black_box(decode_frontend(black_box(front))))
    });
    g.finish();

    // The same streams per message.
    let mut g = c.benchmark_group("pg_codec_per_message");
    g.throughput(Throughput::Elements(messages(BACKEND)));
    g.bench_function("backend_decode", |b| {
        b.iter(|| black_box(decode_backend(black_box(BACKEND))))
    });
    g.throughput(Throughput::Elements(messages(front)));
    g.bench_function("frontend_decode", |b| {
        b.iter(|| black_box(decode_frontend(black_box(front))))
    });
    g.finish();

    // What the gateway writes: a placeholder query and parse, an error and a
    // notice, into a reused buffer.
    let mut g = c.benchmark_group("pg_encode");
    let mut out = Vec::with_capacity(4096);
    let sql = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    let mut sample = Vec::new();
    encode::query(&mut sample, sql);
    encode::parse(&mut sample, b"s1", sql, &[]);
    encode::error_response(
        &mut sample,
        &Report::error("42501", "destructive DDL is blocked on orders"),
    );
    encode::notice_response(
        &mut sample,
        &Report::notice("approval 17 requested for DELETE on orders; waiting up to 300s"),
    );
    g.throughput(Throughput::Elements(4));
    g.bench_function("four_messages", |b| {
        b.iter(|| {
            out.clear();
            encode::query(&mut out, black_box(sql));
            encode::parse(&mut out, b"s1", black_box(sql), &[]);
            encode::error_response(
                &mut out,
                &Report::error("42501", black_box("destructive DDL is blocked on orders")),
            );
            encode::notice_response(
                &mut out,
                &Report::notice(black_box(
                    "approval 17 requested for DELETE on orders; waiting up to 300s",
                )),
            );
            black_box(out.len())
        })
    });
    let mut copy = vec![0u8; sample.len()];
    g.bench_function("baseline_memcpy_same_bytes", |b| {
        b.iter(|| {
            copy.copy_from_slice(black_box(&sample));
            black_box(copy[0])
        })
    });
    g.finish();

    // HTTP: a typical response head, and a chunked body of 64 chunks of 1 KiB.
    let mut g = c.benchmark_group("http_response");
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1234\r\nDate: Fri, 27 Nov 2026 02:00:00 GMT\r\nServer: api\r\nCache-Control: no-store\r\nX-Request-Id: 4f1c2a7e-8b1d-4d3e-9a55-0c6f2b7d9e01\r\n\r\n";
    g.throughput(Throughput::Bytes(head.len() as u64));
    g.bench_function("head_parse", |b| {
        b.iter(|| {
            let mut h = [Header::EMPTY; 32];
            black_box(http::parse_response(black_box(head), &mut h, 65536).is_ok())
        })
    });
    let mut body = Vec::new();
    for _ in 0..64 {
        body.extend_from_slice(b"400\r\n");
        body.extend(std::iter::repeat_n(b'x', 1024));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("chunked_decode", |b| {
        b.iter(|| {
            let mut d = ChunkedDecoder::new(1 << 30);
            let mut at = 0;
            let mut data = 0;
            loop {
                let r = d.decode(&body[at..]).expect("valid");
                data += r.data.len();
                at += r.consumed;
                if r.done {
                    break;
                }
            }
            black_box(data)
        })
    });
    let mut copy = vec![0u8; body.len()];
    g.bench_function("baseline_memcpy_chunked", |b| {
        b.iter(|| {
            copy.copy_from_slice(black_box(&body));
            black_box(copy[0])
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
