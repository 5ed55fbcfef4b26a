//! Message bodies: how long they are (RFC 9112 §6) and the chunked coding.
//!
//! Framing is where request smuggling lives, so the rules are strict and never
//! guess: a request with both `Content-Length` and `Transfer-Encoding`, two
//! `Content-Length` fields (even equal ones), a `Content-Length` that is not
//! plain digits, or any transfer coding but a single `chunked` is refused.
//! [`ChunkedDecoder`] is sans-IO: it is fed whatever bytes have arrived and says
//! how many it consumed, where the data is, and when the body (with its
//! trailers) is complete.

use std::ops::Range;

use super::{Error, Header, Request};

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// Why a message's framing was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    #[error("more than one Content-Length")]
    DuplicateLength,
    #[error("invalid Content-Length")]
    InvalidLength,
    #[error("unsupported Transfer-Encoding (only a single `chunked` is accepted)")]
    UnsupportedCoding,
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    ChunkedInHttp10,
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
}

fn framing(headers: &[Header<'_>], version: u8) -> Result<Option<Framing>, FramingError> {
    let mut length = None;
    let mut coding = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(FramingError::DuplicateLength);
            }
            length = Some(parse_length(h.value)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if coding.is_some() {
                return Err(FramingError::UnsupportedCoding);
            }
            coding = Some(h.value);
        }
    }
    match (length, coding) {
        (Some(_), Some(_)) => Err(FramingError::LengthAndChunked),
        (None, Some(_)) if version == 0 => Err(FramingError::ChunkedInHttp10),
        (None, Some(c)) if c.eq_ignore_ascii_case(b"chunked") => Ok(Some(Framing::Chunked)),
        (None, Some(_)) => Err(FramingError::UnsupportedCoding),
        (Some(n), None) => Ok(Some(Framing::Length(n))),
        (None, None) => Ok(None),
    }
}

/// `Content-Length`: 1 to 19 ASCII digits, nothing else (no sign, no list).
fn parse_length(v: &[u8]) -> Result<u64, FramingError> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(FramingError::InvalidLength);
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The framing of a request body, refusing anything ambiguous; `max` bounds a
/// declared length.
pub fn request_framing(req: &Request<'_, '_>, max: u64) -> Result<Framing, FramingError> {
    let f = framing(req.headers, req.version)?.unwrap_or(Framing::None);
    match f {
        Framing::Length(n) if n > max => Err(FramingError::TooLarge(max)),
        Framing::Length(0) => Ok(Framing::None),
        f => Ok(f),
    }
}

/// The framing of a response to a request with `method`.
pub fn response_framing(resp: &Response<'_, '_>, method: &str) -> Result<Framing, FramingError> {
    if method.eq_ignore_ascii_case("HEAD")
        || resp.status < 200
        || resp.status == 204
        || resp.status == 304
    {
        return Ok(Framing::None);
    }
    Ok(match framing(resp.headers, resp.version)? {
        Some(Framing::Length(0)) => Framing::None,
        Some(f) => f,
        None => Framing::UntilClose,
    })
}

/// A parsed response head borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Response<'h, 'b> {
    pub version: u8,
    pub status: u16,
    pub reason: &'b str,
    pub headers: &'h [Header<'b>],
}

impl<'b> Response<'_, 'b> {
    /// The first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// Parses a response head from the front of `buf` (same strictness as requests).
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
    max_head: usize,
) -> Result<crate::Status<Response<'h, 'b>>, Error> {
    let Some(sp) = memchr::memchr(b'\n', &buf[..buf.len().min(max_head)]) else {
        return if buf.len() >= max_head {
            Err(Error::HeadTooLarge(max_head))
        } else {
            Ok(crate::Status::Partial)
        };
    };
    let line = &buf[..sp];
    let line = line.strip_suffix(b"\r").ok_or(Error::BareLineEnding)?;
    // "HTTP/1.1 200 OK": version, three-digit status, optional reason.
    if line.len() < 12 || line[8] != b' ' || (line.len() > 12 && line[12] != b' ') {
        return Err(Error::RequestLine);
    }
    let version = match &line[..8] {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return Err(Error::Version),
    };
    let code = &line[9..12];
    if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return Err(Error::RequestLine);
    }
    let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let reason = line.get(13..).unwrap_or_default();
    if !reason.iter().all(|&b| b == b'\t' || b >= 0x20 && b != 0x7f) {
        return Err(Error::RequestLine);
    }
    let reason = std::str::from_utf8(reason).map_err(|_| Error::RequestLine)?;
    let head = &buf[..buf.len().min(max_head)];
    let Some((count, end)) = super::parse_fields(head, sp + 1, headers)? else {
        return if buf.len() >= max_head {
            Err(Error::HeadTooLarge(max_head))
        } else {
            super::check_line_endings(buf).map(|()| crate::Status::Partial)
        };
    };
    Ok(crate::Status::Complete(
        Response {
            version,
            status,
            reason,
            headers: &headers[..count],
        },
        end,
    ))
}

/// Largest chunk-size line (size, extensions, CRLF) accepted.
const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// What one [`ChunkedDecoder::decode`] call found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed (framing and data).
    pub consumed: usize,
    /// Data bytes within the input, if any.
    pub data: Range<usize>,
    /// The last chunk and the trailers have been consumed.
    pub done: bool,
}

/// Why chunked framing was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    Size,
    #[error("chunk size line too long")]
    SizeLineTooLong,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("invalid trailer field")]
    Trailer,
    #[error("trailers too large")]
    TrailersTooLarge,
    #[error("chunked body larger than {0} bytes")]
    TooLarge(u64),
}

/// Decodes `Transfer-Encoding: chunked`, incrementally.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    total: u64,
    max: u64,
    trailer_bytes: usize,
    trailers: bool,
}

impl ChunkedDecoder {
    /// A decoder refusing bodies with more than `max` data bytes.
    pub fn new(max: u64) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size,
            total: 0,
            max,
            trailer_bytes: 0,
            trailers: false,
        }
    }

    /// Trailer fields were seen (after the last chunk).
    pub fn has_trailers(&self) -> bool {
        self.trailers
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes decoded so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Consumes framing from `input` up to and including the next data run
    /// (which it returns); call again with the rest. `consumed == 0` with no
    /// data means more input is needed.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Done => {
                    return Ok(Decoded {
                        consumed: pos,
                        data: pos..pos,
                        done: true,
                    })
                }
                State::Size => {
                    let rest = &input[pos..];
                    let Some(nl) = memchr::memchr(b'\n', &rest[..rest.len().min(MAX_SIZE_LINE)])
                    else {
                        if rest.len() >= MAX_SIZE_LINE {
                            return Err(ChunkError::SizeLineTooLong);
                        }
                        return Ok(self.more(pos));
                    };
                    let size = parse_size_line(&rest[..nl])?;
                    pos += nl + 1;
                    if size == 0 {
                        self.state = State::Trailers;
                    } else {
                        self.total = self
                            .total
                            .checked_add(size)
                            .filter(|&t| t <= self.max)
                            .ok_or(ChunkError::TooLarge(self.max))?;
                        self.state = State::Data(size);
                    }
                }
                State::Data(left) => {
                    let n = left.min((input.len() - pos) as u64) as usize;
                    if n == 0 {
                        return Ok(self.more(pos));
                    }
                    self.state = if n as u64 == left {
                        State::DataEnd
                    } else {
                        State::Data(left - n as u64)
                    };
                    return Ok(Decoded {
                        consumed: pos + n,
                        data: pos..pos + n,
                        done: false,
                    });
                }
                State::DataEnd => match input.get(pos..pos + 2) {
                    Some(b"\r\n") => {
                        pos += 2;
                        self.state = State::Size;
                    }
                    Some(_) => return Err(ChunkError::DataEnd),
                    None if input.get(pos).is_some_and(|&b| b != b'\r') => {
                        return Err(ChunkError::DataEnd)
                    }
                    None => return Ok(self.more(pos)),
                },
                State::Trailers => {
                    let rest = &input[pos..];
                    let Some(nl) = memchr::memchr(b'\n', rest) else {
                        if self.trailer_bytes + rest.len() > MAX_TRAILERS {
                            return Err(ChunkError::TrailersTooLarge);
                        }
                        return Ok(self.more(pos));
                    };
                    let line = rest[..nl].strip_suffix(b"\r").ok_or(ChunkError::Trailer)?;
                    self.trailer_bytes += nl + 1;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(ChunkError::TrailersTooLarge);
                    }
                    pos += nl + 1;
                    if line.is_empty() {
                        self.state = State::Done;
                    } else if !valid_trailer(line) {
                        return Err(ChunkError::Trailer);
                    } else {
                        self.trailers = true;
                    }
                }
            }
        }
    }

    fn more(&self, consumed: usize) -> Decoded {
        Decoded {
            consumed,
            data: consumed..consumed,
            done: false,
        }
    }
}

/// `1*HEXDIG [ ; extensions ] CRLF` (the LF already cut off).
fn parse_size_line(line: &[u8]) -> Result<u64, ChunkError> {
    let line = line.strip_suffix(b"\r").ok_or(ChunkError::Size)?;
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, ext) = line.split_at(digits_end);
    if digits.is_empty() || digits.len() > 15 {
        return Err(ChunkError::Size);
    }
    // Extensions are ignored but must be well-formed enough: `;` first, no
    // control bytes (a bare CR here is a smuggling vector).
    // Only spaces and tabs may precede `;` (a CR here is a smuggling vector).
    let ext = {
        let skip = ext.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        &ext[skip..]
    };
    if !ext.is_empty()
        && (ext[0] != b';' || ext.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f))
    {
        return Err(ChunkError::Size);
    }
    Ok(digits.iter().fold(0u64, |n, &d| {
        n * 16 + u64::from((d as char).to_digit(16).unwrap_or(0))
    }))
}

fn valid_trailer(line: &[u8]) -> bool {
    if line[0] == b' ' || line[0] == b'\t' {
        return false;
    }
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    colon > 0
        && line[..colon].iter().all(|&b| super::is_tchar(b))
        && line[colon + 1..]
            .iter()
            .all(|&b| b == b'\t' || b >= 0x20 && b != 0x7f)
}
