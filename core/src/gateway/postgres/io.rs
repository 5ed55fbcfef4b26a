//! Stream helpers of the Postgres session phases: reading one whole message
//! (or startup packet) with its limit and timeout, and the FATAL goodbye. The
//! generic reads and writes live in [`crate::net`].

use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use sluice_protocols::postgres::encode::{self, Report};
use sluice_protocols::postgres::frontend::{self, Startup};
use sluice_protocols::postgres::{self as pg, Frame, Framed};
use sluice_protocols::Status;

use crate::net::{read_more, read_more_timeout};

/// Everything a session's phases need to know about a stream.
pub trait Io: AsyncReadRent + AsyncWriteRent + monoio::io::Split + 'static {}
impl<T: AsyncReadRent + AsyncWriteRent + monoio::io::Split + 'static> Io for T {}

/// Why no whole message could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the stream before a whole message arrived.
    Closed,
    /// A read failed or timed out.
    Io(std::io::Error),
    /// The bytes are not a message, or announce one above the limit.
    Malformed(pg::Error),
}

/// Reads until a whole tagged message is at the front of `buf` and frames it
/// (the caller drains it). Each read waits at most `timeout`; a message
/// announced above `max` is refused from its header, before its body is read.
/// Once the header is in, room for the whole message is reserved at once.
pub async fn read_message<R: AsyncReadRent>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
    timeout: Duration,
) -> Result<Frame, ReadError> {
    loop {
        match pg::frame(buf, max).map_err(ReadError::Malformed)? {
            Framed::Complete(f) => return Ok(f),
            Framed::Partial { header } => {
                if let Some(h) = header {
                    // At least a read's worth, so `read_more` does not grow it again.
                    buf.reserve((h.len - buf.len()).max(4096));
                }
                read_into(r, buf, Some(timeout)).await?;
            }
        }
    }
}

/// Reads until a whole startup packet (untagged: `SSLRequest`,
/// `GSSENCRequest`, `CancelRequest` or the startup message) is at the front of
/// `buf`; returns it and its length (the caller drains it). Each read waits at
/// most `timeout`, if given.
pub async fn read_startup<'b, R: AsyncReadRent>(
    r: &mut R,
    buf: &'b mut Vec<u8>,
    timeout: Option<Duration>,
) -> Result<(Startup<'b>, usize), ReadError> {
    let max = pg::DEFAULT_MAX_STARTUP;
    // Parsed again once whole: returning the borrowed packet from inside the
    // loop would keep `buf` borrowed across the reads.
    while let Status::Partial = frontend::parse_startup(buf, max).map_err(ReadError::Malformed)? {
        read_into(r, buf, timeout).await?;
    }
    match frontend::parse_startup(buf, max).map_err(ReadError::Malformed)? {
        Status::Complete(startup, n) => Ok((startup, n)),
        // The same bytes were whole a moment ago.
        Status::Partial => Err(ReadError::Closed),
    }
}

/// One read into `buf`; end of stream is [`ReadError::Closed`].
async fn read_into<R: AsyncReadRent>(
    r: &mut R,
    buf: &mut Vec<u8>,
    timeout: Option<Duration>,
) -> Result<(), ReadError> {
    let n = match timeout {
        Some(t) => read_more_timeout(r, buf, t).await,
        None => read_more(r, buf).await,
    };
    match n {
        Ok(0) => Err(ReadError::Closed),
        Ok(_) => Ok(()),
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// Sends a FATAL `ErrorResponse` and shuts the stream down.
pub async fn fatal<W: AsyncWriteRent>(w: &mut W, code: &str, message: &str) {
    let mut out = Vec::with_capacity(128 + message.len());
    encode::error_response(&mut out, &Report::fatal(code, message));
    let _ = w.write_all(out).await;
    let _ = w.shutdown().await;
}
