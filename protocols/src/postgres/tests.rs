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
            let Some(f) = frame(&self.buf, DEFAULT_MAX_MESSAGE).unwrap() else {
                return;
            };
            if self.buf.len() < f.len {
                return;
            }
            let body = &self.buf[f.body()];
            let text = if self.frontend {
                let m = frontend::parse(f.tag, body).unwrap();
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
    let f = frame(&out, 1 << 20).unwrap().unwrap();
    let Backend::ErrorResponse(fields) = backend::parse(f.tag, &out[f.body()]).unwrap() else {
        panic!()
    };
    assert_eq!(fields.get(b'C'), Some(&b"42501"[..]));
    assert_eq!(
        fields.get(b'M'),
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
fn bind_parameters_are_read_with_their_formats() {
    use super::frontend::{bind_params, Param};
    let mut rest = Vec::new();
    rest.extend_from_slice(&2i16.to_be_bytes()); // two format codes
    rest.extend_from_slice(&0i16.to_be_bytes());
    rest.extend_from_slice(&1i16.to_be_bytes());
    rest.extend_from_slice(&2i16.to_be_bytes()); // two values
    rest.extend_from_slice(&4i32.to_be_bytes());
    rest.extend_from_slice(b"UTF8");
    rest.extend_from_slice(&(-1i32).to_be_bytes());
    rest.extend_from_slice(&0i16.to_be_bytes()); // result formats
    assert_eq!(
        bind_params(&rest).unwrap(),
        [Param::Text(b"UTF8"), Param::Null]
    );
    // Every truncation is an error, never a panic.
    for cut in 0..rest.len() - 2 {
        let _ = bind_params(&rest[..cut]);
    }
    assert!(bind_params(&rest[..9]).is_err());
}
