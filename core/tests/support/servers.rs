//! Small upstream servers for the L4 tests, one thread per connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

fn serve(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let h = handler.clone();
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || h(stream))
                .expect("spawn upstream thread");
        }
    });
    addr
}

/// Echoes every byte; on EOF from the peer, half-closes its own side.
pub fn echo_server() -> SocketAddr {
    serve(|mut s| {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = s.shutdown(Shutdown::Write);
    })
}

/// Reads until EOF, *then* answers `got N bytes` and closes: works only if the
/// client's half-close reaches it and the reverse direction stays open.
pub fn reply_after_eof_server() -> SocketAddr {
    serve(|mut s| {
        let mut all = Vec::new();
        if s.read_to_end(&mut all).is_ok() {
            let _ = write!(s, "got {} bytes", all.len());
        }
    })
}

/// Sends a greeting and half-closes at once, then counts what the client still
/// sends until its EOF; the count lands in the returned counter.
pub fn greet_then_count_server() -> (SocketAddr, Arc<AtomicU64>) {
    let counted = Arc::new(AtomicU64::new(u64::MAX));
    let c = counted.clone();
    let addr = serve(move |mut s| {
        let _ = s.write_all(b"hello");
        let _ = s.shutdown(Shutdown::Write);
        let mut all = Vec::new();
        if s.read_to_end(&mut all).is_ok() {
            c.store(all.len() as u64, Ordering::SeqCst);
        }
    });
    (addr, counted)
}
