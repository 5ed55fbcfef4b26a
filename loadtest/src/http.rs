//! `http-json`: GET requests for a small JSON document over keep-alive
//! connections, each agent with its own bearer token; and the upstream that
//! serves it (`sluice-loadtest http-upstream`), so the scenario needs nothing
//! installed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::Sample;

/// The document the upstream serves: two customers with PII, so masking works.
pub const DOCUMENT: &str = r#"{"customers":[{"id":1,"name":"Jane Roe","email":"jane@example.com","card":"4111 1111 1111 1111","plan":"pro"},{"id":2,"name":"John Doe","email":"john@example.org","card":"5500 0000 0000 0004","plan":"free"}]}"#;

/// Serves `DOCUMENT` to every request, keep-alive, one thread per connection.
pub fn upstream(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)?;
    eprintln!("http-upstream listening on {listen}");
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{DOCUMENT}",
        DOCUMENT.len()
    );
    let response: Arc<[u8]> = response.into_bytes().into();
    for s in listener.incoming() {
        let Ok(mut s) = s else { continue };
        let response = response.clone();
        thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = Vec::with_capacity(8192);
            let mut chunk = [0u8; 8192];
            loop {
                // Requests carry no body: each ends at its empty line.
                while let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                    buf.drain(..end + 4);
                    if s.write_all(&response).is_err() {
                        return;
                    }
                }
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
    }
    Ok(())
}

/// Closed-loop GETs over `connections` keep-alive connections; `tokens[i % n]`
/// goes in each connection's Authorization header.
pub fn run(
    addr: SocketAddr,
    connections: usize,
    time: Duration,
    tokens: &[String],
    path: &str,
) -> Sample {
    let deadline = Instant::now() + time;
    let started = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..connections)
        .map(|i| {
            let errors = errors.clone();
            let request = match tokens.get(i % tokens.len().max(1)) {
                Some(t) => format!(
                    "GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {t}\r\n\r\n"
                ),
                None => format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n"),
            };
            thread::spawn(move || {
                let mut hist =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let mut ops = 0u64;
                let connect = || {
                    let s = TcpStream::connect(addr).ok()?;
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    Some(s)
                };
                let Some(mut s) = connect() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return (ops, hist);
                };
                let mut buf = Vec::with_capacity(16 * 1024);
                let mut chunk = [0u8; 16 * 1024];
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    if s.write_all(request.as_bytes()).is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    match read_response(&mut s, &mut buf, &mut chunk) {
                        Some((status, close)) => {
                            if status == 200 {
                                ops += 1;
                                let _ = hist.record(t0.elapsed().as_micros().max(1) as u64);
                            } else {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            // The server ends keep-alive (e.g. after N requests):
                            // a new connection, as any client would.
                            if close {
                                buf.clear();
                                match connect() {
                                    Some(n) => s = n,
                                    None => {
                                        errors.fetch_add(1, Ordering::Relaxed);
                                        break;
                                    }
                                }
                            }
                        }
                        None => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                (ops, hist)
            })
        })
        .collect();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut ops = 0;
    for h in handles {
        if let Ok((n, hist)) = h.join() {
            ops += n;
            let _ = latency.add(&hist);
        }
    }
    Sample {
        ops,
        elapsed: started.elapsed(),
        errors: errors.load(Ordering::Relaxed),
        latency,
        held: None,
    }
}

/// Reads one response with a Content-Length body: its status and whether the
/// server closes the connection after it; `None` if the connection failed.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8]) -> Option<(u16, bool)> {
    loop {
        if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).ok()?;
            let status: u16 = head.get(9..12)?.parse().ok()?;
            let close = head.lines().any(|l| {
                l.split_once(':').is_some_and(|(k, v)| {
                    k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
                })
            });
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let n = s.read(chunk).ok().filter(|&n| n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Some((status, close));
        }
        let n = s.read(chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}
