//! Messages from the client: the untagged startup packets and the tagged messages
//! of a session.

use super::{Error, Reader, CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE};
use crate::Status;

/// The type byte of each tagged client message, named as in PostgreSQL's
/// protocol documentation.
pub mod tag {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const EXECUTE: u8 = b'E';
    pub const DESCRIBE: u8 = b'D';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
    /// `PasswordMessage`, `SASLInitialResponse`, `SASLResponse` and
    /// `GSSResponse` share it.
    pub const PASSWORD: u8 = b'p';
}

/// What a `Describe` or `Close` names.
pub mod kind {
    pub const STATEMENT: u8 = b'S';
    pub const PORTAL: u8 = b'P';
}

/// The first packet of a connection (it has no tag byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup<'a> {
    /// The client asks for TLS; answer `S` or `N` with one byte.
    Ssl,
    /// The client asks for GSSAPI encryption; answer `N`.
    GssEnc,
    /// Cancel the query running on the backend with this key.
    Cancel { pid: u32, key: u32 },
    /// A startup message with its `name=value` parameters.
    Message {
        major: u16,
        minor: u16,
        params: Params<'a>,
    },
}

/// The parameters of a startup message, validated as UTF-8 `name\0value\0` pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params<'a>(&'a [u8]);

impl<'a> Params<'a> {
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let mut parts = self.0.split(|&b| b == 0);
        std::iter::from_fn(move || {
            let name = parts.next().filter(|n| !n.is_empty())?;
            let value = parts.next()?;
            // Validated in `parse_startup`.
            Some((
                std::str::from_utf8(name).unwrap_or_default(),
                std::str::from_utf8(value).unwrap_or_default(),
            ))
        })
    }

    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// Parses a startup packet at the front of `buf`; `max` bounds its length.
pub fn parse_startup(buf: &[u8], max: usize) -> Result<Status<Startup<'_>>, Error> {
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(Status::Partial);
    };
    let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    if len < 8 {
        return Err(Error::BadLength(len.into()));
    }
    let len = len as usize;
    if len > max {
        return Err(Error::TooLarge { len, max });
    }
    let Some(packet) = buf.get(..len) else {
        return Ok(Status::Partial);
    };
    let mut r = Reader::new(&packet[4..], "startup");
    let code = r.u32()?;
    let startup = match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            r.finish()?;
            if code == SSL_REQUEST_CODE {
                Startup::Ssl
            } else {
                Startup::GssEnc
            }
        }
        CANCEL_REQUEST_CODE => {
            let pid = r.u32()?;
            let key = r.u32()?;
            r.finish()?;
            Startup::Cancel { pid, key }
        }
        version => {
            let (major, minor) = ((version >> 16) as u16, version as u16);
            if major != 3 {
                return Err(Error::UnsupportedVersion(major, minor));
            }
            let body = r.rest();
            // name\0value\0 ... \0: ends with an empty name.
            if body.last() != Some(&0) || std::str::from_utf8(body).is_err() {
                return Err(Error::Malformed("startup"));
            }
            let fields = body[..body.len() - 1].split(|&b| b == 0).count();
            if body.len() > 1 && fields % 2 != 1 {
                return Err(Error::Malformed("startup"));
            }
            Startup::Message {
                major,
                minor,
                params: Params(&body[..body.len() - 1]),
            }
        }
    };
    Ok(Status::Complete(startup, len))
}

/// A tagged message from the client, borrowing from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend<'a> {
    /// Simple query: one or more statements.
    Query(&'a [u8]),
    Parse {
        name: &'a [u8],
        sql: &'a [u8],
        param_types: &'a [u8],
    },
    Bind(Bind<'a>),
    Describe {
        kind: u8,
        name: &'a [u8],
    },
    Execute {
        portal: &'a [u8],
        max_rows: i32,
    },
    Close {
        kind: u8,
        name: &'a [u8],
    },
    Sync,
    Flush,
    CopyData(&'a [u8]),
    CopyDone,
    CopyFail(&'a [u8]),
    FunctionCall {
        oid: u32,
        rest: &'a [u8],
    },
    Terminate,
    /// `PasswordMessage`, `SASLInitialResponse` or `SASLResponse`: which one depends
    /// on what the server asked for, so the body is left raw.
    Password(&'a [u8]),
}

/// A `Bind`: a portal made from a prepared statement and parameter values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// Parameter format codes, parameter values and result format codes, as
    /// sent (what an approval is bound to); [`Bind::params`] reads them.
    pub rest: &'a [u8],
}

/// One parameter value of a `Bind`, as far as the gateway can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param<'a> {
    /// A value in text format.
    Text(&'a [u8]),
    Null,
    /// A value in binary format: its meaning depends on its type (for the
    /// text types a setting takes, it is the text itself).
    Binary(&'a [u8]),
}

impl<'a> Bind<'a> {
    /// The parameter values in order, each with its format, borrowed from the
    /// message. A malformed body yields one error, then nothing: a truncated
    /// value, a negative count or length other than NULL's -1, or several
    /// format codes that are not one per parameter.
    pub fn params(&self) -> BindParams<'a> {
        let mut r = Reader::new(self.rest, "Bind");
        let header = (|| {
            let nformats = r.i16()?;
            if nformats < 0 {
                return Err(r.err());
            }
            let formats = r.bytes(nformats as usize * 2)?;
            let count = r.i16()?;
            if count < 0 || (nformats > 1 && nformats != count) {
                return Err(r.err());
            }
            Ok((formats, count as usize))
        })();
        match header {
            Ok((formats, count)) => BindParams {
                formats,
                values: r,
                index: 0,
                count,
                error: None,
            },
            Err(e) => BindParams {
                formats: &[],
                values: Reader::new(&[], "Bind"),
                index: 0,
                count: 0,
                error: Some(e),
            },
        }
    }
}

/// The parameter values of a [`Bind`]; see [`Bind::params`].
pub struct BindParams<'a> {
    /// Two bytes per format code: none (all text), one (for all) or one each.
    formats: &'a [u8],
    /// The values, from the next one's length on.
    values: Reader<'a>,
    index: usize,
    count: usize,
    /// A malformed header, reported by the first `next`.
    error: Option<Error>,
}

impl<'a> BindParams<'a> {
    fn format(&self) -> i16 {
        let at = match self.formats.len() {
            0 => return 0,
            2 => 0,
            _ => self.index * 2,
        };
        match self.formats.get(at..at + 2) {
            Some(f) => i16::from_be_bytes([f[0], f[1]]),
            None => 0,
        }
    }
}

impl<'a> Iterator for BindParams<'a> {
    type Item = Result<Param<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        if self.index == self.count {
            return None;
        }
        let format = self.format();
        let values = &mut self.values;
        let value = (|| {
            let len = values.i32()?;
            if len == -1 {
                return Ok(Param::Null);
            }
            if len < 0 {
                return Err(values.err());
            }
            let v = values.bytes(len as usize)?;
            Ok(if format == 0 {
                Param::Text(v)
            } else {
                Param::Binary(v)
            })
        })();
        // After an error nothing more is read.
        self.index = if value.is_ok() {
            self.index + 1
        } else {
            self.count
        };
        Some(value)
    }
}

/// Decodes the body of a frontend message with tag `tag`.
pub fn parse(tag: u8, body: &[u8]) -> Result<Frontend<'_>, Error> {
    Ok(match tag {
        tag::QUERY => {
            let mut r = Reader::new(body, "Query");
            let sql = r.cstr()?;
            r.finish()?;
            Frontend::Query(sql)
        }
        tag::PARSE => {
            let mut r = Reader::new(body, "Parse");
            let name = r.cstr()?;
            let sql = r.cstr()?;
            let n = r.i16()?;
            if n < 0 || r.remaining() != n as usize * 4 {
                return Err(Error::Malformed("Parse"));
            }
            Frontend::Parse {
                name,
                sql,
                param_types: r.rest(),
            }
        }
        tag::BIND => {
            let mut r = Reader::new(body, "Bind");
            let portal = r.cstr()?;
            let statement = r.cstr()?;
            let rest = r.rest();
            validate_bind(rest)?;
            Frontend::Bind(Bind {
                portal,
                statement,
                rest,
            })
        }
        tag::DESCRIBE | tag::CLOSE => {
            let what = if tag == tag::DESCRIBE {
                "Describe"
            } else {
                "Close"
            };
            let mut r = Reader::new(body, what);
            let kind = r.u8()?;
            if kind != kind::STATEMENT && kind != kind::PORTAL {
                return Err(Error::Malformed(what));
            }
            let name = r.cstr()?;
            r.finish()?;
            if tag == tag::DESCRIBE {
                Frontend::Describe { kind, name }
            } else {
                Frontend::Close { kind, name }
            }
        }
        tag::EXECUTE => {
            let mut r = Reader::new(body, "Execute");
            let portal = r.cstr()?;
            let max_rows = r.i32()?;
            r.finish()?;
            Frontend::Execute { portal, max_rows }
        }
        tag::SYNC | tag::FLUSH | tag::COPY_DONE | tag::TERMINATE => {
            if !body.is_empty() {
                return Err(Error::Malformed("Sync/Flush/CopyDone/Terminate"));
            }
            match tag {
                tag::SYNC => Frontend::Sync,
                tag::FLUSH => Frontend::Flush,
                tag::COPY_DONE => Frontend::CopyDone,
                _ => Frontend::Terminate,
            }
        }
        tag::COPY_DATA => Frontend::CopyData(body),
        tag::COPY_FAIL => {
            let mut r = Reader::new(body, "CopyFail");
            let msg = r.cstr()?;
            r.finish()?;
            Frontend::CopyFail(msg)
        }
        tag::FUNCTION_CALL => {
            let mut r = Reader::new(body, "FunctionCall");
            let oid = r.u32()?;
            Frontend::FunctionCall {
                oid,
                rest: r.rest(),
            }
        }
        tag::PASSWORD => Frontend::Password(body),
        other => return Err(Error::UnknownMessage(other as char)),
    })
}

/// Checks the structure of a Bind body after the two names.
fn validate_bind(rest: &[u8]) -> Result<(), Error> {
    let mut r = Reader::new(rest, "Bind");
    let formats = r.i16()?;
    if formats < 0 {
        return Err(Error::Malformed("Bind"));
    }
    r.bytes(formats as usize * 2)?;
    let params = r.i16()?;
    if params < 0 {
        return Err(Error::Malformed("Bind"));
    }
    for _ in 0..params {
        let len = r.i32()?;
        if len >= 0 {
            r.bytes(len as usize)?;
        } else if len != -1 {
            return Err(Error::Malformed("Bind"));
        }
    }
    let results = r.i16()?;
    if results < 0 {
        return Err(Error::Malformed("Bind"));
    }
    r.bytes(results as usize * 2)?;
    r.finish()
}
