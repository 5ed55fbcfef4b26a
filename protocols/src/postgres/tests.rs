//! Recorded traffic (psql and pgbench sessions against PostgreSQL 15, see
//! `testdata/record.py`) decoded whole, split at every byte boundary, and fed one
//! byte at a time: every way of cutting the stream must decode identically.

use super::*;
use crate::Status;

const PSQL_FE: &[u8] = include_bytes!("../../testdata/psql.frontend.bin");
const PSQL_BE: &[u8] = include_bytes!("../../testdata/psql.backend.bin");
const BENCH_FE: &[u8] = include_bytes!("../../testdata/pgbench.frontend.bin");
const BENCH_BE: &[u8] = include_bytes!("../../testdata/pgbench.backend.bin");

/// An incremental decoder as a driver would run one: bytes arrive in chunks,
/// incomplete messages wait for more.
struct Decoder {
    frontend: bool,
    started: bool,
    buf: Vec<u8>,
    /// Tag and body of every message (the startup packet has tag 0).
    out: Vec<(u8, Vec<u8>)>,
    /// Debug rendering of every decoded message, when asked for.
    text: Option<Vec<String>>,
}

impl Decoder {
    fn new(frontend: bool) -> Self {
        Decoder {
            frontend,
            started: !frontend,
            buf: Vec::new(),
            out: Vec::new(),
            text: None,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        loop {
            if !self.started {
                match frontend::parse_startup(&self.buf, DEFAULT_MAX_STARTUP).unwrap() {
                    Status::Complete(s, n) => {
                        if let Some(t) = &mut self.text {
                            t.push(format!("{s:?}"));
                        }
                        self.out.push((0, self.buf[..n].to_vec()));
                        self.buf.drain(..n);
                        self.started = true;
                        continue;
                    }
                    Status::Partial => return,
                }
            }
            let f = match frame(&self.buf, DEFAULT_MAX_MESSAGE).unwrap() {
                Framed::Complete(f) => f,
                Framed::Partial { header } => {
                    // Once the header is in, it says what the whole message needs.
                    if let Some(h) = header {
                        assert!(h.len > self.buf.len());
                    } else {
                        assert!(self.buf.len() < 5);
                    }
                    return;
                }
            };
            let body = &self.buf[f.body()];
            let text = if self.frontend {
                let m = frontend::parse(f.tag, body).unwrap();
                if let Frontend::Bind(bind) = &m {
                    // Every recorded Bind's parameters read in bounds.
                    for p in bind.params() {
                        if let frontend::Param::Text(v) | frontend::Param::Binary(v) = p.unwrap() {
                            assert!(body.as_ptr_range().contains(&v.as_ptr()) || v.is_empty());
                        }
                    }
                }
                self.text.as_ref().map(|_| format!("{m:?}"))
            } else {
                let m = backend::parse(f.tag, body).unwrap();
                if let Backend::DataRow(row) = &m {
                    // Column ranges must stay inside the message and be in order.
                    let mut last = 0;
                    for r in row.ranges().flatten() {
                        assert!(r.start >= last && r.end <= body.len());
                        last = r.end;
                    }
                }
                self.text.as_ref().map(|_| format!("{m:?}"))
            };
            if let (Some(t), Some(text)) = (&mut self.text, text) {
                t.push(text);
            }
            self.out.push((f.tag, body.to_vec()));
            self.buf.drain(..f.len);
        }
    }
}

fn decode(stream: &[u8], frontend: bool, cuts: &[usize]) -> Vec<(u8, Vec<u8>)> {
    run(stream, frontend, cuts, false).0
}

fn render(stream: &[u8], frontend: bool) -> Vec<String> {
    run(stream, frontend, &[], true).1
}

fn run(
    stream: &[u8],
    frontend: bool,
    cuts: &[usize],
    text: bool,
) -> (Vec<(u8, Vec<u8>)>, Vec<String>) {
    let mut d = Decoder::new(frontend);
    if text {
        d.text = Some(Vec::new());
    }
    let mut at = 0;
    for &c in cuts {
        d.feed(&stream[at..c]);
        at = c;
    }
    d.feed(&stream[at..]);
    assert!(d.buf.is_empty(), "trailing bytes left undecoded");
    (d.out, d.text.unwrap_or_default())
}

fn check_every_split(stream: &[u8], frontend: bool) {
    let whole = decode(stream, frontend, &[]);
    assert!(whole.len() > 10, "the recording holds a real session");
    for cut in 1..stream.len() {
        assert_eq!(decode(stream, frontend, &[cut]), whole, "split at {cut}");
    }
    let every: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(
        decode(stream, frontend, &every),
        whole,
        "one byte at a time"
    );
}

#[test]
fn psql_frontend_every_split() {
    check_every_split(PSQL_FE, true);
}

#[test]
fn psql_backend_every_split() {
    check_every_split(PSQL_BE, false);
}

#[test]
fn pgbench_frontend_every_split() {
    check_every_split(BENCH_FE, true);
}

#[test]
fn pgbench_backend_every_split() {
    check_every_split(BENCH_BE, false);
}

#[test]
fn recordings_cover_the_protocol() {
    let fe = [render(PSQL_FE, true), render(BENCH_FE, true)]
        .concat()
        .join("\n");
    for m in [
        "Message {",
        "Query(",
        "Parse {",
        "Bind {",
        "Describe {",
        "Execute {",
        "Sync",
        "CopyData(",
        "CopyDone",
        "Terminate",
    ] {
        assert!(fe.contains(m), "frontend recording lacks {m}");
    }
    let be = [render(PSQL_BE, false), render(BENCH_BE, false)]
        .concat()
        .join("\n");
    for m in [
        "Authentication(Ok)",
        "ParameterStatus",
        "BackendKeyData",
        "ReadyForQuery",
        "RowDescription",
        "DataRow",
        "CommandComplete",
        "ErrorResponse",
        "NoticeResponse",
        "NotificationResponse",
        "CopyOutResponse",
        "CopyInResponse",
        "ParseComplete",
        "BindComplete",
    ] {
        assert!(be.contains(m), "backend recording lacks {m}");
    }
}

#[test]
fn limits_and_malformed_input_give_typed_errors() {
    assert_eq!(
        frame(b"Q\x7f\xff\xff\xff", 1 << 20),
        Err(Error::TooLarge {
            len: 0x8000_0000,
            max: 1 << 20
        })
    );
    assert_eq!(
        frame(b"Q\x7f\xff\xff\xff", 1 << 20),
        frame(b"Q\x7f\xff\xff\xffbody", 1 << 20),
        "too large before any of the body is buffered"
    );
    assert_eq!(frame(b"Q\0\0\0\x03", 1 << 20), Err(Error::BadLength(3)));
    assert_eq!(
        frame(b"Q\xff\xff\xff\xff", 1 << 20),
        Err(Error::BadLength(-1))
    );
    assert_eq!(
        frontend::parse(b'Q', b"no terminator"),
        Err(Error::Malformed("Query"))
    );
    assert_eq!(frontend::parse(b'?', b""), Err(Error::UnknownMessage('?')));
    assert!(
        frontend::parse(b'B', b"\0\0\0\x01\0\x05\0\x01\0\0\0\x09x\0\0").is_err(),
        "parameter longer than message"
    );
    assert!(
        backend::parse(b'D', b"\0\x02\0\0\0\x01a").is_err(),
        "fewer columns than announced"
    );
    assert!(
        backend::parse(b'D', b"\0\x01\xff\xff\xff\xfe").is_err(),
        "negative length other than -1"
    );
    assert!(backend::parse(b'Z', b"X").is_err());
    assert_eq!(
        frontend::parse_startup(b"\0\0\x27\x11", DEFAULT_MAX_STARTUP),
        Err(Error::TooLarge {
            len: 10001,
            max: DEFAULT_MAX_STARTUP
        })
    );
    assert_eq!(
        frontend::parse_startup(b"\0\0\0\x08\0\x02\0\0", DEFAULT_MAX_STARTUP),
        Err(Error::UnsupportedVersion(2, 0))
    );
    assert!(
        frontend::parse_startup(b"\0\0\0\x0e\0\x03\0\0user\0x", 100).is_err(),
        "unterminated parameters"
    );
}

#[test]
fn encoders_round_trip_through_the_decoders() {
    let mut out = Vec::new();
    encode::error_response(&mut out, &encode::Report::error("42501", "no\0pe"));
    let Ok(Framed::Complete(f)) = frame(&out, 1 << 20) else {
        panic!()
    };
    let Backend::ErrorResponse(fields) = backend::parse(f.tag, &out[f.body()]).unwrap() else {
        panic!()
    };
    assert_eq!(fields.get(backend::field::CODE), Some(&b"42501"[..]));
    assert_eq!(
        fields.get(backend::field::MESSAGE),
        Some(&b"no pe"[..]),
        "NUL inside a field cannot shift the others"
    );
    let mut out = Vec::new();
    encode::startup_message(&mut out, &[("user", "u"), ("database", "d")]);
    let Status::Complete(Startup::Message { params, .. }, n) =
        frontend::parse_startup(&out, 1000).unwrap()
    else {
        panic!()
    };
    assert_eq!((n, params.get("database")), (out.len(), Some("d")));
    assert_eq!(
        encode::md5_password("postgres", "secret", *b"abcd").len(),
        35
    );
}

#[test]
fn frame_is_partial_until_the_whole_message_is_buffered() {
    let msg = b"Q\0\0\0\x0dSELECT 1\0";
    let header = Frame {
        tag: frontend::tag::QUERY,
        len: msg.len(),
    };
    for cut in 0..msg.len() {
        let want = Framed::Partial {
            header: (cut >= 5).then_some(header),
        };
        assert_eq!(frame(&msg[..cut], 1 << 20), Ok(want), "cut at {cut}");
    }
    assert_eq!(frame(msg, 1 << 20), Ok(Framed::Complete(header)));
    let two = [&msg[..], &msg[..]].concat();
    assert_eq!(frame(&two, 1 << 20), Ok(Framed::Complete(header)));
    assert_eq!(
        frame(msg, msg.len() - 1),
        Err(Error::TooLarge {
            len: msg.len(),
            max: msg.len() - 1
        })
    );
}

/// A Bind body after its names: format codes, values, result formats.
fn bind_rest(formats: &[i16], values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut rest = Vec::new();
    rest.extend_from_slice(&(formats.len() as i16).to_be_bytes());
    for f in formats {
        rest.extend_from_slice(&f.to_be_bytes());
    }
    rest.extend_from_slice(&(values.len() as i16).to_be_bytes());
    for v in values {
        match v {
            Some(v) => {
                rest.extend_from_slice(&(v.len() as i32).to_be_bytes());
                rest.extend_from_slice(v);
            }
            None => rest.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    rest.extend_from_slice(&0i16.to_be_bytes()); // result formats
    rest
}

fn params(rest: &[u8]) -> Result<Vec<frontend::Param<'_>>, Error> {
    let bind = frontend::Bind {
        portal: b"",
        statement: b"",
        rest,
    };
    bind.params().collect()
}

#[test]
fn bind_parameters_are_read_with_their_formats() {
    use super::frontend::Param;
    let rest = bind_rest(&[0, 1], &[Some(b"UTF8"), None]);
    assert_eq!(params(&rest).unwrap(), [Param::Text(b"UTF8"), Param::Null]);
    // One format code applies to every value; none means text.
    let rest = bind_rest(&[1], &[Some(b"a"), Some(b"")]);
    assert_eq!(
        params(&rest).unwrap(),
        [Param::Binary(b"a"), Param::Binary(b"")]
    );
    let rest = bind_rest(&[], &[Some(b"a"), None]);
    assert_eq!(params(&rest).unwrap(), [Param::Text(b"a"), Param::Null]);
    assert_eq!(params(&bind_rest(&[], &[])).unwrap(), []);
    // Through the parser, borrowed from the message.
    let mut body = b"portal\0stmt\0".to_vec();
    body.extend_from_slice(&bind_rest(&[0], &[Some(b"x")]));
    let Frontend::Bind(bind) = frontend::parse(frontend::tag::BIND, &body).unwrap() else {
        panic!()
    };
    assert_eq!(
        (bind.portal, bind.statement),
        (&b"portal"[..], &b"stmt"[..])
    );
    let Some(Ok(Param::Text(v))) = bind.params().next() else {
        panic!()
    };
    assert_eq!(v.as_ptr(), body[body.len() - 3..].as_ptr(), "zero-copy");
}

#[test]
fn malformed_bind_parameters_are_errors_never_panics() {
    let rest = bind_rest(&[0, 1], &[Some(b"UTF8"), None]);
    // Every truncation is an error, never a panic (the result formats are
    // not read: cutting them off leaves the values readable).
    for cut in 0..rest.len() - 2 {
        assert_eq!(
            params(&rest[..cut]),
            Err(Error::Malformed("Bind")),
            "cut at {cut}"
        );
    }
    let bad = Err(Error::Malformed("Bind"));
    // Format codes neither none, one, nor one per value.
    assert_eq!(params(&bind_rest(&[0, 0], &[Some(b"a")])), bad);
    // A negative count of formats or values.
    assert_eq!(params(b"\xff\xff\0\0\0\0"), bad);
    assert_eq!(params(b"\0\0\xff\xff\0\0"), bad);
    // A negative length other than NULL's.
    assert_eq!(params(b"\0\0\0\x01\xff\xff\xff\xfe\0\0"), bad);
    // A length past the end.
    assert_eq!(params(b"\0\0\0\x01\0\0\0\x09x\0\0"), bad);
    // After the error, nothing more.
    let bind = frontend::Bind {
        portal: b"",
        statement: b"",
        rest: b"\0\0\0\x02\0\0\0\x01a\xff\xff\xff\xfe",
    };
    let mut it = bind.params();
    assert_eq!(it.next(), Some(Ok(frontend::Param::Text(b"a"))));
    assert_eq!(it.next(), Some(Err(Error::Malformed("Bind"))));
    assert_eq!(it.next(), None);
    let mut it = frontend::Bind { rest: b"", ..bind }.params();
    assert!(matches!(it.next(), Some(Err(_))));
    assert_eq!(it.next(), None);
}

#[test]
fn function_call_response_value_is_read_in_bounds() {
    #[allow(clippy::type_complexity)]
    fn parse(body: &[u8]) -> Result<(Option<&[u8]>, Option<std::ops::Range<usize>>), Error> {
        match backend::parse(backend::tag::FUNCTION_CALL_RESPONSE, body)? {
            Backend::FunctionCallResponse(r) => Ok((r.value(), r.value_range())),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(parse(b"\0\0\0\x03abc"), Ok((Some(&b"abc"[..]), Some(4..7))));
    assert_eq!(parse(b"\0\0\0\0"), Ok((Some(&b""[..]), Some(4..4))));
    assert_eq!(parse(b"\xff\xff\xff\xff"), Ok((None, None)), "NULL");
    let bad = Err(Error::Malformed("FunctionCallResponse"));
    for body in [
        &b""[..],
        b"\0\0\0",
        b"\0\0\0\x04abc",
        b"\0\0\0\x02abc",
        b"\xff\xff\xff\xffx",
        b"\xff\xff\xff\xfe",
    ] {
        assert_eq!(parse(body), bad, "{body:?}");
    }
}
