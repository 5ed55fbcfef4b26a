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
