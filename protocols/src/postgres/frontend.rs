//! Messages from the client: the untagged startup packets and the tagged messages
//! of a session.

use super::{Error, Reader, CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE};
use crate::Status;

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
    Bind {
        portal: &'a [u8],
        statement: &'a [u8],
        /// Formats, parameter values and result formats, as sent.
        rest: &'a [u8],
    },
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

/// Decodes the body of a frontend message with tag `tag`.
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

/// The parameter values of a `Bind` (its body after the portal and statement
/// names, `Frontend::Bind::rest`).
pub fn bind_params(rest: &[u8]) -> Result<Vec<Param<'_>>, Error> {
    let bad = || Error::Malformed("Bind");
    let mut at = 0usize;
    let i16_at = |at: &mut usize| -> Result<i16, Error> {
        let v = rest.get(*at..*at + 2).ok_or_else(bad)?;
        *at += 2;
        Ok(i16::from_be_bytes([v[0], v[1]]))
    };
    let nformats = i16_at(&mut at)?;
    if nformats < 0 {
        return Err(bad());
    }
    let mut formats = Vec::with_capacity(nformats as usize);
    for _ in 0..nformats {
        formats.push(i16_at(&mut at)?);
    }
    let nparams = i16_at(&mut at)?;
    if nparams < 0 || (nformats > 1 && nformats != nparams) {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(nparams as usize);
    for k in 0..nparams as usize {
        let len = rest.get(at..at + 4).ok_or_else(bad)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        let format = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => formats[k],
        };
        if len == -1 {
            out.push(Param::Null);
            continue;
        }
        if len < 0 {
            return Err(bad());
        }
        let value = rest.get(at..at + len as usize).ok_or_else(bad)?;
        at += len as usize;
        out.push(if format == 0 {
            Param::Text(value)
        } else {
            Param::Binary(value)
        });
    }
    Ok(out)
}

pub fn parse(tag: u8, body: &[u8]) -> Result<Frontend<'_>, Error> {
    Ok(match tag {
        b'Q' => {
            let mut r = Reader::new(body, "Query");
            let sql = r.cstr()?;
            r.finish()?;
            Frontend::Query(sql)
        }
        b'P' => {
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
        b'B' => {
            let mut r = Reader::new(body, "Bind");
            let portal = r.cstr()?;
            let statement = r.cstr()?;
            let rest = r.rest();
            validate_bind(rest)?;
            Frontend::Bind {
                portal,
                statement,
                rest,
            }
        }
        b'D' | b'C' => {
            let what = if tag == b'D' { "Describe" } else { "Close" };
            let mut r = Reader::new(body, what);
            let kind = r.u8()?;
            if kind != b'S' && kind != b'P' {
                return Err(Error::Malformed(what));
            }
            let name = r.cstr()?;
            r.finish()?;
            if tag == b'D' {
                Frontend::Describe { kind, name }
            } else {
                Frontend::Close { kind, name }
            }
        }
        b'E' => {
            let mut r = Reader::new(body, "Execute");
            let portal = r.cstr()?;
            let max_rows = r.i32()?;
            r.finish()?;
            Frontend::Execute { portal, max_rows }
        }
        b'S' | b'H' | b'c' | b'X' => {
            if !body.is_empty() {
                return Err(Error::Malformed("Sync/Flush/CopyDone/Terminate"));
            }
            match tag {
                b'S' => Frontend::Sync,
                b'H' => Frontend::Flush,
                b'c' => Frontend::CopyDone,
                _ => Frontend::Terminate,
            }
        }
        b'd' => Frontend::CopyData(body),
        b'f' => {
            let mut r = Reader::new(body, "CopyFail");
            let msg = r.cstr()?;
            r.finish()?;
            Frontend::CopyFail(msg)
        }
        b'F' => {
            let mut r = Reader::new(body, "FunctionCall");
            let oid = r.u32()?;
            Frontend::FunctionCall {
                oid,
                rest: r.rest(),
            }
        }
        b'p' => Frontend::Password(body),
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
