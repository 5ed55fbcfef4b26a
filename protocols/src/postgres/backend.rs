//! Messages from the server.

use std::ops::Range;

use super::{Error, Reader};

/// The type byte of each server message, named as in PostgreSQL's protocol
/// documentation.
pub mod tag {
    /// Every `Authentication*` request and `AuthenticationOk`.
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const DATA_ROW: u8 = b'D';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const NO_DATA: u8 = b'n';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

/// The field codes of an `ErrorResponse` or `NoticeResponse`, named as in
/// PostgreSQL's documentation of them.
pub mod field {
    /// Localized severity.
    pub const SEVERITY: u8 = b'S';
    /// Severity, never localized.
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    /// The SQLSTATE.
    pub const CODE: u8 = b'C';
    pub const MESSAGE: u8 = b'M';
    pub const DETAIL: u8 = b'D';
    pub const HINT: u8 = b'H';
    pub const POSITION: u8 = b'P';
    pub const INTERNAL_POSITION: u8 = b'p';
    /// The text of an internally generated command (such as PL/pgSQL's).
    pub const INTERNAL_QUERY: u8 = b'q';
    /// Where the error occurred: a call stack of PL functions and the like.
    pub const WHERE: u8 = b'W';
    pub const SCHEMA_NAME: u8 = b's';
    pub const TABLE_NAME: u8 = b't';
    pub const COLUMN_NAME: u8 = b'c';
    pub const DATA_TYPE_NAME: u8 = b'd';
    pub const CONSTRAINT_NAME: u8 = b'n';
    pub const FILE: u8 = b'F';
    pub const LINE: u8 = b'L';
    pub const ROUTINE: u8 = b'R';
}

/// The transaction status a `ReadyForQuery` reports.
pub mod status {
    pub const IDLE: u8 = b'I';
    pub const IN_TRANSACTION: u8 = b'T';
    /// In a failed transaction block.
    pub const FAILED: u8 = b'E';
}

/// A tagged message from the server, borrowing from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend<'a> {
    Authentication(Auth<'a>),
    BackendKeyData {
        pid: u32,
        key: u32,
    },
    ParameterStatus {
        name: &'a [u8],
        value: &'a [u8],
    },
    /// Transaction status: `I` idle, `T` in a transaction, `E` in a failed one.
    ReadyForQuery(u8),
    RowDescription(RowDescription<'a>),
    DataRow(DataRow<'a>),
    CommandComplete(&'a [u8]),
    ErrorResponse(Fields<'a>),
    NoticeResponse(Fields<'a>),
    NotificationResponse {
        pid: u32,
        channel: &'a [u8],
        payload: &'a [u8],
    },
    CopyInResponse(&'a [u8]),
    CopyOutResponse(&'a [u8]),
    CopyBothResponse(&'a [u8]),
    CopyData(&'a [u8]),
    CopyDone,
    EmptyQueryResponse,
    ParseComplete,
    BindComplete,
    CloseComplete,
    NoData,
    PortalSuspended,
    ParameterDescription(&'a [u8]),
    FunctionCallResponse(FunctionCallResponse<'a>),
    NegotiateProtocolVersion {
        minor: u32,
        options: &'a [u8],
    },
}

/// The authentication request or outcome in an `R` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth<'a> {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    /// SASL: the mechanisms the server offers, NUL-separated.
    Sasl(&'a [u8]),
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    /// Kerberos, GSS, SSPI, ...: methods the gateway does not speak upstream.
    Other(u32),
}

impl<'a> Auth<'a> {
    /// The SASL mechanisms offered, for [`Auth::Sasl`].
    pub fn mechanisms(list: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        list.split(|&b| b == 0).filter(|m| !m.is_empty())
    }
}

/// Decodes the body of a backend message with tag `tag`.
pub fn parse(tag: u8, body: &[u8]) -> Result<Backend<'_>, Error> {
    Ok(match tag {
        tag::AUTHENTICATION => {
            let mut r = Reader::new(body, "Authentication");
            let auth = match r.i32()? {
                0 => Auth::Ok,
                3 => Auth::CleartextPassword,
                5 => {
                    let s = r.bytes(4)?;
                    Auth::Md5Password {
                        salt: [s[0], s[1], s[2], s[3]],
                    }
                }
                10 => Auth::Sasl(r.rest()),
                11 => Auth::SaslContinue(r.rest()),
                12 => Auth::SaslFinal(r.rest()),
                other => Auth::Other(other as u32),
            };
            Backend::Authentication(auth)
        }
        tag::BACKEND_KEY_DATA => {
            let mut r = Reader::new(body, "BackendKeyData");
            let pid = r.u32()?;
            let key = r.u32()?;
            r.finish()?;
            Backend::BackendKeyData { pid, key }
        }
        tag::PARAMETER_STATUS => {
            let mut r = Reader::new(body, "ParameterStatus");
            let name = r.cstr()?;
            let value = r.cstr()?;
            r.finish()?;
            Backend::ParameterStatus { name, value }
        }
        tag::READY_FOR_QUERY => {
            let mut r = Reader::new(body, "ReadyForQuery");
            let status = r.u8()?;
            r.finish()?;
            if !matches!(
                status,
                status::IDLE | status::IN_TRANSACTION | status::FAILED
            ) {
                return Err(Error::Malformed("ReadyForQuery"));
            }
            Backend::ReadyForQuery(status)
        }
        tag::ROW_DESCRIPTION => Backend::RowDescription(RowDescription::new(body)?),
        tag::DATA_ROW => Backend::DataRow(DataRow::new(body)?),
        tag::COMMAND_COMPLETE => {
            let mut r = Reader::new(body, "CommandComplete");
            let tag = r.cstr()?;
            r.finish()?;
            Backend::CommandComplete(tag)
        }
        tag::ERROR_RESPONSE => Backend::ErrorResponse(Fields::new(body)?),
        tag::NOTICE_RESPONSE => Backend::NoticeResponse(Fields::new(body)?),
        tag::NOTIFICATION_RESPONSE => {
            let mut r = Reader::new(body, "NotificationResponse");
            let pid = r.u32()?;
            let channel = r.cstr()?;
            let payload = r.cstr()?;
            r.finish()?;
            Backend::NotificationResponse {
                pid,
                channel,
                payload,
            }
        }
        tag::COPY_IN_RESPONSE => Backend::CopyInResponse(body),
        tag::COPY_OUT_RESPONSE => Backend::CopyOutResponse(body),
        tag::COPY_BOTH_RESPONSE => Backend::CopyBothResponse(body),
        tag::COPY_DATA => Backend::CopyData(body),
        tag::COPY_DONE => empty(body, Backend::CopyDone)?,
        tag::EMPTY_QUERY_RESPONSE => empty(body, Backend::EmptyQueryResponse)?,
        tag::PARSE_COMPLETE => empty(body, Backend::ParseComplete)?,
        tag::BIND_COMPLETE => empty(body, Backend::BindComplete)?,
        tag::CLOSE_COMPLETE => empty(body, Backend::CloseComplete)?,
        tag::NO_DATA => empty(body, Backend::NoData)?,
        tag::PORTAL_SUSPENDED => empty(body, Backend::PortalSuspended)?,
        tag::PARAMETER_DESCRIPTION => Backend::ParameterDescription(body),
        tag::FUNCTION_CALL_RESPONSE => {
            Backend::FunctionCallResponse(FunctionCallResponse::new(body)?)
        }
        tag::NEGOTIATE_PROTOCOL_VERSION => {
            let mut r = Reader::new(body, "NegotiateProtocolVersion");
            let minor = r.u32()?;
            Backend::NegotiateProtocolVersion {
                minor,
                options: r.rest(),
            }
        }
        other => return Err(Error::UnknownMessage(other as char)),
    })
}

fn empty(body: &[u8], m: Backend<'static>) -> Result<Backend<'static>, Error> {
    if body.is_empty() {
        Ok(m)
    } else {
        Err(Error::Malformed("empty-bodied"))
    }
}

/// Fields of an `ErrorResponse`/`NoticeResponse`: `(code, value)` pairs, e.g.
/// `(field::CODE, b"42501")`, `(field::MESSAGE, b"permission denied")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn new(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body, "ErrorResponse");
        loop {
            if r.u8()? == 0 {
                r.finish()?;
                return Ok(Fields(body));
            }
            r.cstr()?;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u8, &'a [u8])> {
        let mut r = Reader::new(self.0, "ErrorResponse");
        std::iter::from_fn(move || {
            let code = r.u8().ok().filter(|&c| c != 0)?;
            Some((code, r.cstr().ok()?))
        })
    }

    pub fn get(&self, code: u8) -> Option<&'a [u8]> {
        self.iter().find(|(c, _)| *c == code).map(|(_, v)| v)
    }

    /// The byte ranges of every field value within the message body (for masking
    /// the human-readable ones in place).
    pub fn value_ranges(&self) -> impl Iterator<Item = (u8, Range<usize>)> + 'a {
        let base = self.0.as_ptr() as usize;
        self.iter().map(move |(c, v)| {
            (
                c,
                v.as_ptr() as usize - base..v.as_ptr() as usize - base + v.len(),
            )
        })
    }
}

/// A `RowDescription`: one entry per result column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowDescription<'a> {
    count: u16,
    body: &'a [u8],
}

/// One column of a [`RowDescription`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column<'a> {
    pub name: &'a [u8],
    pub table_oid: u32,
    pub attnum: i16,
    pub type_oid: u32,
    pub type_len: i16,
    pub type_mod: i32,
    /// 0 text, 1 binary.
    pub format: i16,
}

impl<'a> RowDescription<'a> {
    fn new(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body, "RowDescription");
        let count = r.i16()?;
        if count < 0 {
            return Err(Error::Malformed("RowDescription"));
        }
        for _ in 0..count {
            r.cstr()?;
            r.bytes(18)?;
        }
        r.finish()?;
        Ok(RowDescription {
            count: count as u16,
            body: &body[2..],
        })
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn columns(&self) -> impl Iterator<Item = Column<'a>> {
        let mut r = Reader::new(self.body, "RowDescription");
        // Structure validated in `new`.
        (0..self.count).map_while(move |_| {
            Some(Column {
                name: r.cstr().ok()?,
                table_oid: r.u32().ok()?,
                attnum: r.i16().ok()?,
                type_oid: r.u32().ok()?,
                type_len: r.i16().ok()?,
                type_mod: r.i32().ok()?,
                format: r.i16().ok()?,
            })
        })
    }
}

/// A `DataRow`: column values located lazily, without copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRow<'a> {
    count: u16,
    body: &'a [u8],
}

impl<'a> DataRow<'a> {
    fn new(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body, "DataRow");
        let count = r.i16()?;
        if count < 0 {
            return Err(Error::Malformed("DataRow"));
        }
        let row = DataRow {
            count: count as u16,
            body,
        };
        // Validate once so `ranges` can be infallible.
        let mut seen = 0;
        for range in row.ranges_unchecked() {
            range?;
            seen += 1;
        }
        if seen != count as usize || row.end()? != body.len() {
            return Err(Error::Malformed("DataRow"));
        }
        Ok(row)
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn end(&self) -> Result<usize, Error> {
        let mut end = 2;
        for r in self.ranges_unchecked() {
            let (_, e) = r?;
            end = e;
        }
        Ok(end)
    }

    fn ranges_unchecked(
        &self,
    ) -> impl Iterator<Item = Result<(Option<Range<usize>>, usize), Error>> + 'a {
        let body = self.body;
        let mut pos = 2usize;
        (0..self.count).map(move |_| {
            let len_bytes = body.get(pos..pos + 4).ok_or(Error::Malformed("DataRow"))?;
            let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
            pos += 4;
            if len == -1 {
                return Ok((None, pos));
            }
            if len < 0 || body.len() - pos < len as usize {
                return Err(Error::Malformed("DataRow"));
            }
            let range = pos..pos + len as usize;
            pos += len as usize;
            Ok((Some(range), pos))
        })
    }

    /// Each column's byte range within the message body (`None` for SQL NULL).
    pub fn ranges(&self) -> impl Iterator<Item = Option<Range<usize>>> + 'a {
        self.ranges_unchecked()
            .map(|r| r.map(|(range, _)| range).unwrap_or(None))
    }
}

/// A `FunctionCallResponse`: the result of a fast-path function call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionCallResponse<'a> {
    body: &'a [u8],
    null: bool,
}

impl<'a> FunctionCallResponse<'a> {
    /// A length (-1: NULL) and exactly that many bytes.
    fn new(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body, "FunctionCallResponse");
        let len = r.i32()?;
        let null = len == -1;
        if null {
            r.finish()?;
        } else if len < 0 || len as usize != r.remaining() {
            return Err(Error::Malformed("FunctionCallResponse"));
        }
        Ok(FunctionCallResponse { body, null })
    }

    /// The result value; `None` for SQL NULL.
    pub fn value(&self) -> Option<&'a [u8]> {
        (!self.null).then(|| &self.body[4..])
    }

    /// The value's byte range within the message body (for masking it in
    /// place); `None` for SQL NULL.
    pub fn value_range(&self) -> Option<Range<usize>> {
        (!self.null).then_some(4..self.body.len())
    }
}
