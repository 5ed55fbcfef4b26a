//! HTTP/1.1 request heads, parsed in place.
//!
//! [`parse_request`] reads the request line and header fields from the front of a
//! buffer into a caller-provided header array (so parsing allocates nothing) and
//! says how long the head was. It is strict in the ways that matter to a gateway:
//! bare CR or LF, obsolete line folding, control bytes and over-long heads are
//! errors, never guessed at, because a lenient parser in front of a strict one is
//! how requests get smuggled.
//!
//! ```
//! use sluice_protocols::{http, Status};
//! let mut headers = [http::Header::EMPTY; 16];
//! let buf = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
//! let Status::Complete(req, len) = http::parse_request(buf, &mut headers, 8192).unwrap() else {
//!     panic!("incomplete")
//! };
//! assert_eq!((req.method, req.target, len), ("GET", "/healthz", buf.len()));
//! assert_eq!(req.header("host"), Some(&b"x"[..]));
//! ```

use crate::Status;

/// One header field; the value is raw bytes with surrounding whitespace trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
}

impl Header<'_> {
    pub const EMPTY: Header<'static> = Header {
        name: "",
        value: b"",
    };
}

/// A parsed request head borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'h, 'b> {
    pub method: &'b str,
    /// The request target as sent (origin form: path and query).
    pub target: &'b str,
    /// Minor version: `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub version: u8,
    pub headers: &'h [Header<'b>],
}

impl<'b> Request<'_, 'b> {
    /// The first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The path without its query string.
    pub fn path(&self) -> &'b str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }

    /// The query string, if any.
    pub fn query(&self) -> Option<&'b str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("request head is larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("malformed request line")]
    RequestLine,
    #[error("unsupported HTTP version")]
    Version,
    #[error("malformed header field")]
    HeaderField,
    #[error("obsolete line folding is not accepted")]
    ObsFold,
    #[error("bare CR or LF in the request head")]
    BareLineEnding,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a request head from the front of `buf`.
///
/// `max_head` bounds the head's size: a buffer holding that many bytes without a
/// complete head is an error rather than a reason to read more.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
    max_head: usize,
) -> Result<Status<Request<'h, 'b>>, Error> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        if buf.len() >= max_head {
            return Err(Error::HeadTooLarge(max_head));
        }
        // A bare LF anywhere before the terminator can never become valid.
        check_line_endings(buf)?;
        return Ok(Status::Partial);
    };
    if end + 4 > max_head {
        return Err(Error::HeadTooLarge(max_head));
    }
    let head = &buf[..end + 2];
    check_line_endings(head)?;

    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| &l[..l.len().saturating_sub(1)]);
    let request_line = lines.next().ok_or(Error::RequestLine)?;
    let (method, target, version) = request_line_parts(request_line)?;

    let mut count = 0;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(Error::ObsFold);
        }
        let colon = memchr::memchr(b':', line).ok_or(Error::HeaderField)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(Error::HeaderField);
        }
        let value = trim(&line[colon + 1..]);
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Error::HeaderField);
        }
        let slot = headers.get_mut(count).ok_or(Error::TooManyHeaders(count))?;
        *slot = Header {
            // Checked above: every byte is a token character.
            name: std::str::from_utf8(name).map_err(|_| Error::HeaderField)?,
            value,
        };
        count += 1;
    }
    Ok(Status::Complete(
        Request {
            method,
            target,
            version,
            headers: &headers[..count],
        },
        end + 4,
    ))
}

fn request_line_parts(line: &[u8]) -> Result<(&str, &str, u8), Error> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::RequestLine);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Error::RequestLine);
    }
    if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(Error::RequestLine);
    }
    let version = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return Err(Error::Version),
    };
    let as_str = |b| std::str::from_utf8(b).map_err(|_| Error::RequestLine);
    Ok((as_str(method)?, as_str(target)?, version))
}

/// Every LF must be preceded by CR and every CR followed by LF.
fn check_line_endings(buf: &[u8]) -> Result<(), Error> {
    for i in memchr::memchr2_iter(b'\r', b'\n', buf) {
        match buf[i] {
            b'\n' if i == 0 || buf[i - 1] != b'\r' => return Err(Error::BareLineEnding),
            b'\r' if i + 1 < buf.len() && buf[i + 1] != b'\n' => return Err(Error::BareLineEnding),
            _ => {}
        }
    }
    Ok(())
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests;
