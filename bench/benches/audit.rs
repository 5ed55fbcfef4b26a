//! Audit pipeline: the cost of pushing one record into a shard's ring (while a
//! consumer drains it), with and without encoding it, against a
//! mutex-protected queue; and the writer's throughput to disk in batched mode
//! (draining, chain hashing, JSON framing, one fsync per batch, records
//! encoded ahead), against writing the same bytes with no chain at all.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice::audit::event::{Command, Flags, Via};
use sluice::audit::{Audit, Event as _, Settings};

fn record(buf: &mut Vec<u8>, i: u64) {
    Command {
        cmd: Some(i),
        text: Some(b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
        flags: Some(Flags {
            writes: false,
            opaque: false,
            unbounded: false,
        }),
        ..Command::new(
            "4ce8a60946fc9823",
            "orders",
            "agent-17",
            "postgres",
            Via::Message("parse"),
            "allow",
        )
    }
    .with_kinds(["select"].into_iter())
    .encode(buf);
}

/// 64 records, encoded before the clock starts.
fn encoded_ahead() -> Vec<Vec<u8>> {
    (0..64)
        .map(|i| {
            let mut buf = Vec::with_capacity(512);
            record(&mut buf, i);
            buf
        })
        .collect()
}

fn push(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit_push");
    g.throughput(Throughput::Elements(1));
    let (mut ring, mut rx) = sluice_ring::channel(4 << 20);
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut scratch = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                rx.drain(
                    |r| {
                        black_box(r.len());
                    },
                    &mut scratch,
                );
            }
        })
    };
    let mut buf = Vec::with_capacity(512);
    let mut i = 0;
    g.bench_function("ring_encode_and_push", |b| {
        b.iter(|| {
            i += 1;
            record(&mut buf, i);
            while ring.push(&buf).is_none() {
                std::hint::spin_loop();
            }
        })
    });
    record(&mut buf, 42);
    g.bench_function("ring_push_only", |b| {
        b.iter(|| {
            while ring.push(black_box(&buf)).is_none() {
                std::hint::spin_loop();
            }
        })
    });
    let queue = Mutex::new(std::collections::VecDeque::<Vec<u8>>::new());
    g.bench_function("baseline_mutex_queue", |b| {
        b.iter(|| {
            i += 1;
            record(&mut buf, i);
            let mut q = queue.lock().unwrap();
            q.push_back(buf.clone());
            if q.len() > 1024 {
                q.clear();
            }
        })
    });
    stop.store(true, Ordering::Relaxed);
    consumer.join().unwrap();
    g.finish();
}

fn settings(dir: &std::path::Path) -> Settings {
    Settings {
        dir: dir.to_path_buf(),
        strict: false,
        flush_interval: Duration::from_millis(5),
        segment_bytes: 1 << 30,
        segment_age: Duration::from_secs(3600),
        retention_age: None,
        retention_bytes: None,
        checkpoint_every: 100_000,
        checkpoint_interval: Duration::from_secs(10),
        ring_bytes: 32 << 20,
        anchor_file: None,
    }
}

fn writer(c: &mut Criterion) {
    const N: u64 = 200_000;
    let mut g = c.benchmark_group("audit_writer");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    g.bench_function("batched_to_disk", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
                let (audit, mut links) = Audit::start(settings(dir.path()), 1, key).unwrap();
                let mut ring = links.remove(0).ring;
                // Encoded ahead (the shards' cost is `audit_push`): this
                // measures the writer, draining, chaining and writing.
                let records = encoded_ahead();
                let start = Instant::now();
                for i in 0..N {
                    let buf = &records[(i % 64) as usize];
                    while ring.push(buf).is_none() {
                        audit.pipeline.kick();
                        std::hint::spin_loop();
                    }
                    if i % 256 == 0 {
                        audit.pipeline.kick();
                    }
                }
                audit.close();
                total += start.elapsed();
                assert!(audit.pipeline.written.load(Ordering::Relaxed) >= N);
            }
            total
        })
    });
    g.bench_function("baseline_plain_append_fsync", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let mut f = std::fs::File::create(dir.path().join("plain.log")).unwrap();
                let records = encoded_ahead();
                let mut batch = Vec::with_capacity(1 << 20);
                let start = Instant::now();
                for i in 0..N {
                    batch.extend_from_slice(&records[(i % 64) as usize]);
                    batch.push(b'\n');
                    if batch.len() > 1 << 20 {
                        f.write_all(&batch).unwrap();
                        f.sync_data().unwrap();
                        batch.clear();
                    }
                }
                f.write_all(&batch).unwrap();
                f.sync_data().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, push, writer);
criterion_main!(benches);
