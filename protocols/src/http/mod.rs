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

mod body;
pub mod forms;
pub mod rewrite;
pub use body::{
    parse_response, request_framing, response_framing, ChunkError, ChunkedDecoder, Decoded,
    Framing, FramingError, Response,
};

/// Every `charset` a `Content-Type` value names, as the laxest parser reads
/// it: any `charset` word followed by `=` (spaces around it allowed), wherever
/// it stands (a later one, one after a comma, one inside another parameter's
/// quotes), the value unquoted. A value naming more than one cannot be
/// trusted to mean the one a scan would read.
pub fn charsets(content_type: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let v = content_type;
    let mut i = 0;
    while i + 7 <= v.len() {
        if !v[i..i + 7].eq_ignore_ascii_case(b"charset") {
            i += 1;
            continue;
        }
        let mut j = i + 7;
        while j < v.len() && (v[j] == b' ' || v[j] == b'\t') {
            j += 1;
        }
        if v.get(j) != Some(&b'=') {
            i += 7;
            continue;
        }
        j += 1;
        while j < v.len() && (v[j] == b' ' || v[j] == b'\t' || v[j] == b'"' || v[j] == b'\'') {
            j += 1;
        }
        let end = v[j..]
            .iter()
            .position(|&b| matches!(b, b';' | b',' | b'"' | b'\'' | b' ' | b'\t'))
            .map_or(v.len(), |p| j + p);
        out.push(v[j..end].to_vec());
        i = end.max(i + 7);
    }
    out
}

/// Whether a `Content-Type` leaves the body's bytes readable as they are:
/// no charset, or exactly one that is [`ascii_compatible`].
pub fn readable_charset(content_type: &[u8]) -> bool {
    match charsets(content_type).as_slice() {
        [] => true,
        [one] => ascii_compatible(one),
        _ => false,
    }
}

/// Whether text in `charset` spells ASCII as ASCII bytes, one byte each, so
/// a scan of the raw bytes reads what a decoder reads: UTF-8, ASCII, the
/// ISO-8859 family and the Windows code pages. UTF-16/32, UTF-7, EBCDIC and
/// anything unknown are not.
pub fn ascii_compatible(charset: &[u8]) -> bool {
    let numbered = |prefix: &[u8], ok: &dyn Fn(u32) -> bool| {
        charset.len() > prefix.len()
            && charset[..prefix.len()].eq_ignore_ascii_case(prefix)
            && std::str::from_utf8(&charset[prefix.len()..])
                .ok()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0'))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(ok)
    };
    [&b"utf-8"[..], b"utf8", b"us-ascii", b"ascii", b"latin1"]
        .iter()
        .any(|c| charset.eq_ignore_ascii_case(c))
        || numbered(b"iso-8859-", &|n| (1..=16).contains(&n))
        // Not `windows-1200`/`1201` (UTF-16 in ICU's aliases), nor 12000/12001.
        || numbered(b"windows-", &|n| n == 874 || (1250..=1258).contains(&n))
}

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

    /// The credential of `Authorization: Bearer <token>` (scheme in either
    /// case), trimmed.
    pub fn bearer_token(&self) -> Option<&'b str> {
        let v = std::str::from_utf8(self.header("authorization")?).ok()?;
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))?;
        Some(token.trim())
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

/// `TCHAR[b]`: `b` may appear in a method or header name (RFC 9110 token).
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// `VALUE[b]`: `b` may appear in a header value (no controls but HTAB, no DEL).
static VALUE: [bool; 256] = {
    let mut t = [true; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b == 0x09;
        b += 1;
    }
    t[0x7f] = false;
    t
};

/// Word-at-a-time check that `v` holds no byte below 0x20 and no DEL; words with
/// a candidate (a tab is legal) fall back to the byte table.
fn valid_value(v: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        let x = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
        // Some byte < 0x20, or some byte == 0x7f (x ^ 0x7f... has a zero byte).
        let below = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let y = x ^ (ONES * 0x7f);
        let del = y.wrapping_sub(ONES) & !y & HIGH;
        if (below | del) != 0 && !c.iter().all(|&b| VALUE[b as usize]) {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| VALUE[b as usize])
}

fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
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
    // One pass, line by line: a line without its LF yet means "read more".
    let limit = buf.len().min(max_head);
    let head = &buf[..limit];
    let incomplete = || {
        if buf.len() >= max_head {
            Err(Error::HeadTooLarge(max_head))
        } else {
            // A bare CR/LF already received can never become valid.
            check_line_endings(buf).map(|()| Status::Partial)
        }
    };
    let mut pos = 0;
    let Some(request_line) = next_line(head, &mut pos)? else {
        return incomplete();
    };
    if request_line.contains(&b'\r') {
        return Err(Error::BareLineEnding);
    }
    let (method, target, version) = request_line_parts(request_line)?;
    let Some((count, pos)) = parse_fields(head, pos, headers)? else {
        return incomplete();
    };
    Ok(Status::Complete(
        Request {
            method,
            target,
            version,
            headers: &headers[..count],
        },
        pos,
    ))
}

/// Parses header fields from `head[pos..]` up to the empty line into `headers`;
/// `Some((count, end of head))`, or `None` if the head has not all arrived.
fn parse_fields<'b>(
    head: &'b [u8],
    mut pos: usize,
    headers: &mut [Header<'b>],
) -> Result<Option<(usize, usize)>, Error> {
    let mut count = 0;
    loop {
        let Some(line) = next_line(head, &mut pos)? else {
            return Ok(None);
        };
        if line.is_empty() {
            return Ok(Some((count, pos)));
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(Error::ObsFold);
        }
        let colon = memchr::memchr(b':', line).ok_or_else(|| line_error(line))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(line_error(line));
        }
        let value = trim(&line[colon + 1..]);
        if !valid_value(value) {
            return Err(line_error(line));
        }
        let slot = headers.get_mut(count).ok_or(Error::TooManyHeaders(count))?;
        *slot = Header {
            // Checked above: every byte is a token character.
            name: std::str::from_utf8(name).map_err(|_| Error::HeaderField)?,
            value,
        };
        count += 1;
    }
}

/// The next CRLF-terminated line of `head` from `*pos`, without its CRLF;
/// `None` if its LF has not arrived yet.
fn next_line<'b>(head: &'b [u8], pos: &mut usize) -> Result<Option<&'b [u8]>, Error> {
    let start = *pos;
    let Some(nl) = memchr::memchr(b'\n', &head[start..]) else {
        return Ok(None);
    };
    let nl = start + nl;
    if nl == start || head[nl - 1] != b'\r' {
        return Err(Error::BareLineEnding);
    }
    *pos = nl + 1;
    Ok(Some(&head[start..nl - 1]))
}

/// A bad header line is a line-ending error if it hides a bare CR.
fn line_error(line: &[u8]) -> Error {
    if line.contains(&b'\r') {
        Error::BareLineEnding
    } else {
        Error::HeaderField
    }
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
