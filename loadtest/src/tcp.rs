//! L4 scenarios: `tcp-stream` (bulk throughput through an echo upstream) and
//! `tcp-rr` (64-byte request/response round trips).
//!
//! Both expect the endpoint to lead to an echo server (`sluice-loadtest echo`).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::Sample;

/// Streams for `time` over `connections` connections; counts bytes echoed back.
pub fn stream(addr: SocketAddr, connections: usize, time: Duration) -> Sample {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..connections {
        let (stop, received, errors) = (stop.clone(), received.clone(), errors.clone());
        handles.push(thread::spawn(move || {
            let Ok(conn) = TcpStream::connect(addr) else {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let _ = conn.set_nodelay(true);
            let mut reader = conn.try_clone().expect("clone socket");
            let writer_stop = stop.clone();
            let mut writer = conn;
            let w = thread::spawn(move || {
                let chunk = vec![0xa5u8; 64 * 1024];
                while !writer_stop.load(Ordering::Relaxed) {
                    if writer.write_all(&chunk).is_err() {
                        break;
                    }
                }
                let _ = writer.shutdown(Shutdown::Write);
            });
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if !stop.load(Ordering::Relaxed) {
                            received.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            let _ = w.join();
        }));
    }
    thread::sleep(time);
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for h in handles {
        let _ = h.join();
    }
    Sample {
        ops: received.load(Ordering::Relaxed),
        elapsed,
        errors: errors.load(Ordering::Relaxed),
        latency: Histogram::new(3).expect("histogram"),
        held: None,
    }
}

/// Closed-loop 64-byte round trips; `ops` counts round trips.
pub fn request_response(addr: SocketAddr, connections: usize, time: Duration) -> Sample {
    let deadline = Instant::now() + time;
    let started = Instant::now();
    let handles: Vec<_> = (0..connections)
        .map(|_| {
            thread::spawn(move || {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let mut errors = 0;
                let Ok(mut c) = TcpStream::connect(addr) else {
                    return (h, 1);
                };
                let _ = c.set_nodelay(true);
                let msg = [0x42u8; 64];
                let mut back = [0u8; 64];
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if c.write_all(&msg)
                        .and_then(|_| c.read_exact(&mut back))
                        .is_err()
                    {
                        errors += 1;
                        break;
                    }
                    h.saturating_record(t.elapsed().as_micros() as u64);
                }
                (h, errors)
            })
        })
        .collect();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    for h in handles {
        if let Ok((hist, e)) = h.join() {
            let _ = latency.add(&hist);
            errors += e;
        }
    }
    Sample {
        ops: latency.len(),
        elapsed: started.elapsed(),
        errors,
        latency,
        held: None,
    }
}

/// An echo server: one thread per connection, half-closes on the peer's EOF.
pub fn echo(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(listen)?;
    eprintln!("echo listening on {}", listener.local_addr()?);
    for conn in listener.incoming() {
        let Ok(mut c) = conn else { continue };
        let _ = c.set_nodelay(true);
        thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 || c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = c.shutdown(Shutdown::Write);
        });
    }
    Ok(())
}
