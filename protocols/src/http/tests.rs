use super::*;

type Parsed = (String, String, Vec<(String, Vec<u8>)>);

fn parse(buf: &[u8]) -> Result<Status<Parsed>, Error> {
    let mut headers = [Header::EMPTY; 8];
    Ok(match parse_request(buf, &mut headers, 1024)? {
        Status::Complete(r, n) => Status::Complete(
            (
                r.method.to_owned(),
                r.target.to_owned(),
                r.headers
                    .iter()
                    .map(|h| (h.name.to_owned(), h.value.to_vec()))
                    .collect(),
            ),
            n,
        ),
        Status::Partial => Status::Partial,
    })
}

const REQ: &[u8] = b"POST /api/reload?x=1 HTTP/1.1\r\nHost: a\r\nX-Y:  b c \t\r\n\r\nbody";

#[test]
fn parses_a_request_and_stops_at_the_body() {
    let Status::Complete((m, t, h), n) = parse(REQ).unwrap() else {
        panic!()
    };
    assert_eq!((m.as_str(), t.as_str()), ("POST", "/api/reload?x=1"));
    assert_eq!(
        h,
        vec![
            ("Host".into(), b"a".to_vec()),
            ("X-Y".into(), b"b c".to_vec())
        ]
    );
    assert_eq!(&REQ[n..], b"body");
}

#[test]
fn every_split_point_is_partial_then_complete() {
    let head_len = REQ.len() - 4;
    for cut in 0..head_len {
        assert_eq!(parse(&REQ[..cut]).unwrap(), Status::Partial, "cut at {cut}");
    }
    assert!(matches!(parse(&REQ[..head_len]).unwrap(), Status::Complete(_, n) if n == head_len));
}

#[test]
fn refuses_what_could_be_smuggled() {
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"),
        Err(Error::ObsFold)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\nA: b\r\n\r\n"),
        Err(Error::BareLineEnding)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"),
        Err(Error::BareLineEnding)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nA b\r\n\r\n"),
        Err(Error::HeaderField)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nA : b\r\n\r\n"),
        Err(Error::HeaderField)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nA: b\0\r\n\r\n"),
        Err(Error::HeaderField)
    );
    assert_eq!(parse(b"GET  / HTTP/1.1\r\n\r\n"), Err(Error::RequestLine));
    assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n"), Err(Error::Version));
    assert_eq!(
        parse(b"GET /\x7f HTTP/1.1\r\n\r\n"),
        Err(Error::RequestLine)
    );
}

#[test]
fn enforces_limits() {
    let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(9));
    assert_eq!(parse(many.as_bytes()), Err(Error::TooManyHeaders(8)));
    let long = vec![b'a'; 2000];
    assert_eq!(parse(&long), Err(Error::HeadTooLarge(1024)));
}

#[test]
fn path_and_query() {
    let mut headers = [Header::EMPTY; 1];
    let Status::Complete(r, _) = parse_request(
        b"GET /a/b?state=pending HTTP/1.0\r\n\r\n",
        &mut headers,
        100,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        (r.path(), r.query(), r.version),
        ("/a/b", Some("state=pending"), 0)
    );
}

#[test]
fn value_check_matches_the_byte_table_everywhere() {
    // Each byte value at each position of a 19-byte value (covers both the word
    // loop and the tail).
    for b in 0..=255u8 {
        for at in 0..19 {
            let mut v = [b'a'; 19];
            v[at] = b;
            assert_eq!(valid_value(&v), VALUE[b as usize], "byte {b:#x} at {at}");
        }
    }
}

mod bodies {
    use crate::http::*;
    use crate::Status;

    fn framing_of(head: &str) -> Result<Framing, FramingError> {
        let mut h = [Header::EMPTY; 16];
        let Ok(Status::Complete(req, _)) = parse_request(head.as_bytes(), &mut h, 8192) else {
            panic!("head did not parse: {head:?}")
        };
        request_framing(&req, 1 << 20)
    }

    #[test]
    fn request_framing_refuses_every_smuggling_shape() {
        let ok = |h: &str| framing_of(&format!("POST / HTTP/1.1\r\nHost: x\r\n{h}\r\n"));
        assert_eq!(ok(""), Ok(Framing::None));
        assert_eq!(ok("Content-Length: 5\r\n"), Ok(Framing::Length(5)));
        assert_eq!(ok("Content-Length: 0\r\n"), Ok(Framing::None));
        assert_eq!(ok("Transfer-Encoding: chunked\r\n"), Ok(Framing::Chunked));
        assert_eq!(ok("Transfer-Encoding: CHUNKED\r\n"), Ok(Framing::Chunked));
        for (h, want) in [
            (
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                FramingError::LengthAndChunked,
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                FramingError::LengthAndChunked,
            ),
            (
                "Content-Length: 5\r\nContent-Length: 5\r\n",
                FramingError::DuplicateLength,
            ),
            (
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                FramingError::DuplicateLength,
            ),
            ("Content-Length: 5, 5\r\n", FramingError::InvalidLength),
            ("Content-Length: +5\r\n", FramingError::InvalidLength),
            ("Content-Length: -1\r\n", FramingError::InvalidLength),
            ("Content-Length: 0x10\r\n", FramingError::InvalidLength),
            ("Content-Length: \r\n", FramingError::InvalidLength),
            (
                "Content-Length: 99999999999999999999\r\n",
                FramingError::InvalidLength,
            ),
            (
                "Content-Length: 2000000\r\n",
                FramingError::TooLarge(1 << 20),
            ),
            (
                "Transfer-Encoding: gzip, chunked\r\n",
                FramingError::UnsupportedCoding,
            ),
            (
                "Transfer-Encoding: chunked, chunked\r\n",
                FramingError::UnsupportedCoding,
            ),
            (
                "Transfer-Encoding: xchunked\r\n",
                FramingError::UnsupportedCoding,
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                FramingError::UnsupportedCoding,
            ),
            (
                "Transfer-Encoding: identity\r\n",
                FramingError::UnsupportedCoding,
            ),
        ] {
            assert_eq!(ok(h), Err(want), "{h:?}");
        }
        assert_eq!(
            framing_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(FramingError::ChunkedInHttp10)
        );
        // Obs-fold and bare line endings never get as far as framing.
        let mut h = [Header::EMPTY; 16];
        for head in [
            "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\nX: y\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\rX: y\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
        ] {
            assert!(
                parse_request(head.as_bytes(), &mut h, 8192).is_err(),
                "{head:?}"
            );
        }
    }

    #[test]
    fn responses_parse_and_frame() {
        let mut h = [Header::EMPTY; 16];
        let buf =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        let Ok(Status::Complete(r, n)) = parse_response(buf, &mut h, 8192) else {
            panic!()
        };
        assert_eq!(
            (r.version, r.status, r.reason, n),
            (1, 200, "OK", buf.len() - 2)
        );
        assert_eq!(r.header("content-type"), Some(&b"application/json"[..]));
        assert_eq!(response_framing(&r, "GET"), Ok(Framing::Length(2)));
        assert_eq!(response_framing(&r, "HEAD"), Ok(Framing::None));
        for (head, want) in [
            ("HTTP/1.1 204 No Content\r\n\r\n", Framing::None),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                Framing::None,
            ),
            ("HTTP/1.1 100 Continue\r\n\r\n", Framing::None),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
            ),
            ("HTTP/1.0 200 OK\r\n\r\n", Framing::UntilClose),
            ("HTTP/1.1 500\r\n\r\n", Framing::UntilClose),
        ] {
            let mut h = [Header::EMPTY; 16];
            let Ok(Status::Complete(r, _)) = parse_response(head.as_bytes(), &mut h, 8192) else {
                panic!("{head:?}")
            };
            assert_eq!(response_framing(&r, "GET"), Ok(want), "{head:?}");
        }
        for bad in [
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\n\r\n",
            "HTTP/1.1 099 X\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        ] {
            let mut h = [Header::EMPTY; 16];
            assert!(
                parse_response(bad.as_bytes(), &mut h, 8192).is_err(),
                "{bad:?}"
            );
        }
        let mut h = [Header::EMPTY; 16];
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nX: y\r\n", &mut h, 8192),
            Ok(Status::Partial)
        );
    }

    /// Decodes `input` fed in pieces split at `split`; returns (data, consumed).
    fn decode_split(input: &[u8], split: usize) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new(1 << 20);
        let mut data = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut consumed = 0;
        for piece in [&input[..split], &input[split..]] {
            pending.extend_from_slice(piece);
            loop {
                let r = d.decode(&pending)?;
                data.extend_from_slice(&pending[r.data.clone()]);
                pending.drain(..r.consumed);
                consumed += r.consumed;
                if r.done || r.consumed == 0 {
                    break;
                }
            }
        }
        Ok((data, consumed, d.is_done()))
    }

    #[test]
    fn chunked_decodes_identically_at_every_split_point() {
        let body = b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Checksum: 42\r\n\r\nNEXT";
        for split in 0..=body.len() {
            let (data, consumed, done) = decode_split(body, split).unwrap();
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "split {split}");
            assert!(done, "split {split}");
            assert_eq!(consumed, body.len() - 4, "the next message is left alone");
        }
    }

    #[test]
    fn chunked_refuses_malformed_framing() {
        for bad in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5 junk\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"\r\nhello\r\n",
            b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
            b"5\r\nhello\r\n0\r\n folded: x\r\n\r\n",
        ] {
            let all = (0..=bad.len()).all(|s| decode_split(bad, s).is_err());
            assert!(all, "{:?}", String::from_utf8_lossy(bad));
        }
        let mut d = ChunkedDecoder::new(4);
        assert_eq!(d.decode(b"5\r\nhello\r\n"), Err(ChunkError::TooLarge(4)));
        let long = [vec![b'1'; 20], b"\r\n".to_vec()].concat();
        assert_eq!(
            ChunkedDecoder::new(1 << 20).decode(&long),
            Err(ChunkError::Size)
        );
        let ext = [b"1;".as_slice(), &vec![b'x'; 5000]].concat();
        assert_eq!(
            ChunkedDecoder::new(1 << 20).decode(&ext),
            Err(ChunkError::SizeLineTooLong)
        );
    }
}
