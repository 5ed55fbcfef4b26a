//! Socket helpers below the drivers: shard listeners, a look at a socket
//! without reading it, and the stream reads and writes every driver does
//! (read more into a growing buffer, write a range of it without copying,
//! drain a peer before closing).

use std::net::SocketAddr;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener};

/// Binds a listener that shares its port with the other shards' listeners.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind_with_config(addr, &ListenerOpts::new().reuse_port(true).backlog(4096))
}

/// The events (of `events`, plus hang-up and error) a socket has right now,
/// without waiting: how an idle session notices its peer without reading.
pub fn poll_now(fd: std::os::fd::RawFd, events: i16) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout; the caller owns the fd.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n > 0 {
        p.revents
    } else {
        0
    }
}

/// Reads more bytes, appending to `buf` (growing it when full). `Ok(0)` is EOF.
pub async fn read_more<R: AsyncReadRent>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(buf.capacity().max(8192));
    }
    let len = buf.len();
    let owned = std::mem::take(buf);
    let (res, slice) = r.read(owned.slice_mut(len..)).await;
    *buf = slice.into_inner();
    res
}

/// Like [`read_more`] but gives up after `timeout` (a timeout reads as an error).
pub async fn read_more_timeout<R: AsyncReadRent>(
    r: &mut R,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> std::io::Result<usize> {
    match monoio::time::timeout(timeout, read_more(r, buf)).await {
        Ok(res) => res,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        )),
    }
}

/// Writes `buf[range]` without copying it; the buffer is handed back.
pub async fn write_range<W: AsyncWriteRent>(
    w: &mut W,
    buf: &mut Vec<u8>,
    range: std::ops::Range<usize>,
) -> std::io::Result<()> {
    if range.is_empty() {
        return Ok(());
    }
    let owned = std::mem::take(buf);
    let (res, slice) = w.write_all(owned.slice(range)).await;
    *buf = slice.into_inner();
    res.map(|_| ())
}

/// After a fatal error, reads and drops what the client is still sending (for up
/// to five seconds), so closing does not reset the connection before the client
/// has read the error.
pub async fn linger<R: AsyncReadRent>(client: &mut R) {
    let mut sink = Vec::with_capacity(64 * 1024);
    let drain = async {
        loop {
            sink.clear();
            match read_more(client, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = monoio::time::timeout(Duration::from_secs(5), drain).await;
}
