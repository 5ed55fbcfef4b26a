//! Small I/O helpers shared by the Postgres session phases.

use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use sluice_protocols::postgres::encode::{self, Report};

/// Everything a session's phases need to know about a stream.
pub trait Io: AsyncReadRent + AsyncWriteRent + monoio::io::Split + 'static {}
impl<T: AsyncReadRent + AsyncWriteRent + monoio::io::Split + 'static> Io for T {}

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

/// Sends a FATAL `ErrorResponse` and shuts the stream down.
pub async fn fatal<W: AsyncWriteRent>(w: &mut W, code: &str, message: &str) {
    let mut out = Vec::with_capacity(128 + message.len());
    encode::error_response(&mut out, &Report::fatal(code, message));
    let _ = w.write_all(out).await;
    let _ = w.shutdown().await;
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
