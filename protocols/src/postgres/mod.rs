//! PostgreSQL frontend/backend protocol 3.0, both directions, sans-IO.
//!
//! The gateway reads bytes into a buffer and asks this module what they are:
//! [`frame`] says whether a whole message is buffered (and, once its header is,
//! how long it is), [`frontend::parse`] and [`backend::parse`] give a borrowed
//! view of its body (SQL text, statement names, `Bind` parameters, `DataRow`
//! column ranges, error fields) without copying, and [`encode`] builds the few
//! messages the gateway writes itself (errors, notices, authentication
//! requests, its own startup). [`scram`] is the SCRAM-SHA-256 client used to log
//! in to the upstream with the target's credentials. Message types are named by
//! [`frontend::tag`] and [`backend::tag`], error and notice fields by
//! [`backend::field`].
//!
//! Limits are part of parsing: a length field above the configured maximum is an
//! error before any of the body is buffered.
//!
//! ```
//! use sluice_protocols::postgres::{frame, frontend, Frame, Framed, Frontend};
//! let msg = b"Q\0\0\0\x0dSELECT 1\0";
//! // An incomplete message is a normal outcome, not an error.
//! let header = Frame { tag: frontend::tag::QUERY, len: msg.len() };
//! assert_eq!(frame(&msg[..7], 1 << 20), Ok(Framed::Partial { header: Some(header) }));
//! let Ok(Framed::Complete(f)) = frame(msg, 1 << 20) else { panic!() };
//! assert_eq!((f.tag, f.len), (frontend::tag::QUERY, msg.len()));
//! let Frontend::Query(sql) = frontend::parse(f.tag, &msg[f.body()]).unwrap() else { panic!() };
//! assert_eq!(sql, b"SELECT 1");
//! ```

pub mod backend;
pub mod encode;
pub mod encoding;
pub mod frontend;
pub mod options;
pub mod scram;
pub mod session;

pub use backend::Backend;
pub use frontend::{Frontend, Startup};

/// Default ceiling for one message (PostgreSQL's own is 1 GiB).
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;
/// Default ceiling for a startup packet (PostgreSQL uses 10000 bytes).
pub const DEFAULT_MAX_STARTUP: usize = 10_000;

/// Protocol version 3.0 as sent in a startup packet.
pub const PROTOCOL_3_0: u32 = 196_608;
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// The one-byte answer to an `SSLRequest` when the server will do TLS.
pub const SSL_WILLING: u8 = b'S';
/// The one-byte answer to an `SSLRequest` or `GSSENCRequest` when the server
/// will not encrypt.
pub const ENCRYPTION_UNWILLING: u8 = b'N';

/// Why bytes could not be decoded as PostgreSQL protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("unsupported protocol version {0}.{1}")]
    UnsupportedVersion(u16, u16),
    #[error("unknown message type {0:?}")]
    UnknownMessage(char),
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// The tag and total length (tag + length field + body) of the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub len: usize,
}

impl Frame {
    /// The body's range within the buffer the frame was read from.
    pub fn body(&self) -> std::ops::Range<usize> {
        5..self.len
    }
}

/// What [`frame`] found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// The next message is not all buffered yet. Once its five header bytes
    /// are, `header` gives its tag and whole length: a driver can reserve the
    /// rest at once, or stream a large message through.
    Partial { header: Option<Frame> },
    /// A whole message is buffered: `buf[..frame.len]`.
    Complete(Frame),
}

/// Frames the tagged message at the front of `buf`.
///
/// A length above `max` (or below the length field's own four bytes) is an
/// error as soon as the header is buffered, before any of the body is.
pub fn frame(buf: &[u8], max: usize) -> Result<Framed, Error> {
    let Some(header) = buf.get(..5) else {
        return Ok(Framed::Partial { header: None });
    };
    let declared = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if declared < 4 {
        return Err(Error::BadLength(declared.into()));
    }
    let len = declared as usize + 1;
    if len > max {
        return Err(Error::TooLarge { len, max });
    }
    let f = Frame {
        tag: header[0],
        len,
    };
    Ok(if buf.len() < len {
        Framed::Partial { header: Some(f) }
    } else {
        Framed::Complete(f)
    })
}

/// A cursor over a message body; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn err(&self) -> Error {
        Error::Malformed(self.what)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| self.err())?;
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, Error> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, Error> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        self.i32().map(|v| v as u32)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.buf.len() < n {
            return Err(self.err());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A NUL-terminated string, without its NUL.
    pub(crate) fn cstr(&mut self) -> Result<&'a [u8], Error> {
        let nul = memchr::memchr(0, self.buf).ok_or_else(|| self.err())?;
        let s = &self.buf[..nul];
        self.buf = &self.buf[nul + 1..];
        Ok(s)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn finish(&self) -> Result<(), Error> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err())
        }
    }
}

#[cfg(test)]
mod tests;
