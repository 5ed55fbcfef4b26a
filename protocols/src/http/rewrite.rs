//! What a gateway changes in a request head before it goes upstream: the
//! path rules judge (canonical, decoded), headers never forwarded (hop-by-hop,
//! the caller's token, rewrite and override headers), the injected
//! credential, and the framing line.

use std::io::Write as _;

use super::{Framing, Request};

/// A path without `//`, `.`/`..` segments, backslashes or encoded `/ \ .`,
/// so rules match what the upstream will resolve.
pub fn canonical(path: &str) -> bool {
    let p = path.as_bytes();
    let encoded_bad = memchr::memchr_iter(b'%', p).any(|i| {
        let code = p.get(i + 1..i + 3).unwrap_or_default();
        [&b"2f"[..], b"5c", b"2e", b"00"]
            .iter()
            .any(|c| code.eq_ignore_ascii_case(c))
    });
    !encoded_bad
        && memchr::memmem::find(p, b"//").is_none()
        && memchr::memchr(b'\\', p).is_none()
        && !path.split('/').any(|s| s == "." || s == "..")
}

/// The path as rules see it: percent-decoded and without `;parameters` in any
/// segment (servers that honour either would otherwise resolve a path no rule
/// matched). `None` for a malformed escape.
pub fn rule_path(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !path.contains(['%', ';']) {
        return Some(std::borrow::Cow::Borrowed(path));
    }
    let b = path.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            decoded.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    let stripped: Vec<&str> = decoded
        .split('/')
        .map(|seg| seg.split(';').next().unwrap_or_default())
        .collect();
    // What decoding and stripping revealed must be as canonical as the raw
    // path: no `.`/`..` and no empty segment (but the leading and a trailing one).
    let last = stripped.len() - 1;
    if stripped
        .iter()
        .enumerate()
        .any(|(i, s)| *s == "." || *s == ".." || (s.is_empty() && i != 0 && i != last))
    {
        return None;
    }
    Some(std::borrow::Cow::Owned(stripped.join("/")))
}

/// Headers never forwarded: hop-by-hop ones, the caller's token, and what the
/// gateway sets itself.
pub const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "host",
    "authorization",
    "content-length",
    "transfer-encoding",
    // The gateway says who the client is.
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    // The requester's reason for an approval, for the gateway only.
    "sluice-reason",
];

/// Headers that make IIS, Symfony, Laravel and similar route to another path
/// than the request's own: refused, as the path is what the rules judged.
pub const REWRITE_HEADERS: &[&str] = &[
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-override-url",
    "x-forwarded-uri",
    "x-forwarded-path",
];

/// Headers that would make the upstream run another method than the one the
/// rules judged: refused.
pub const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

fn percent_encode(v: &[u8], out: &mut Vec<u8>) {
    for &b in v {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

pub fn finish_head(head: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            let _ = write!(head, "content-length: {n}\r\n");
        }
        Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
    head.extend_from_slice(b"\r\n");
}

/// What the gateway writes into the head it sends upstream.
pub struct UpstreamHead<'a> {
    /// The upstream's address, sent as `Host`.
    pub host: &'a str,
    /// The header the credential goes in (the caller's own is dropped).
    pub credential_header: Option<&'a str>,
    /// The query parameter the credential goes in.
    pub credential_param: Option<&'a str>,
    pub credential: Option<&'a str>,
    /// Responses are read as text (masking, or keeping the credential from
    /// flowing back): ask for no content coding and no partial ranges.
    pub identity_encoding: bool,
    /// The caller's address, as `X-Forwarded-For`.
    pub forwarded_for: &'a str,
}

/// The head that goes upstream: same method and target (plus an injected
/// credential parameter), the client's end-to-end headers, the gateway's own.
/// Framing lines are added per request ([`finish_head`]).
pub fn request_head(req: &Request<'_, '_>, up: &UpstreamHead<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    if let (Some(param), Some(value)) = (up.credential_param, up.credential) {
        out.push(if req.target.contains('?') { b'&' } else { b'?' });
        out.extend_from_slice(param.as_bytes());
        out.push(b'=');
        percent_encode(value.as_bytes(), &mut out);
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(up.host.as_bytes());
    out.extend_from_slice(b"\r\n");
    // A header the Connection header names is hop-by-hop too.
    let connection = req.header("connection").unwrap_or_default();
    let named = |name: &str| {
        connection
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    };
    for h in req.headers {
        if DROPPED.iter().any(|d| d.eq_ignore_ascii_case(h.name))
            || named(h.name)
            || (up.identity_encoding
                && ["accept-encoding", "range", "if-range"]
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(h.name)))
            || up
                .credential_header
                .is_some_and(|c| c.eq_ignore_ascii_case(h.name))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if let (Some(header), Some(value)) = (up.credential_header, up.credential) {
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if up.identity_encoding {
        out.extend_from_slice(b"accept-encoding: identity\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    out.extend_from_slice(up.forwarded_for.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// Response headers a gateway never passes on (hop-by-hop).
pub const RESPONSE_HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Appends `data` as one chunk of a chunked body (nothing for no data: an
/// empty chunk would end the body).
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, Header};
    use crate::Status;

    fn head(raw: &[u8], up: &UpstreamHead<'_>) -> String {
        let mut headers = [Header::EMPTY; 32];
        let Ok(Status::Complete(req, _)) = parse_request(raw, &mut headers, 8192) else {
            panic!("parse")
        };
        String::from_utf8(request_head(&req, up)).unwrap()
    }

    #[test]
    fn the_upstream_head_drops_hop_by_hop_and_the_callers_token_and_injects_the_credential() {
        let up = UpstreamHead {
            host: "api.internal:443",
            credential_header: Some("X-Api-Key"),
            credential_param: Some("key"),
            credential: Some("s3 cr&t"),
            identity_encoding: true,
            forwarded_for: "10.0.0.7",
        };
        let out = head(
            b"GET /v1/x?a=1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer jwt\r\nConnection: x-trace, keep-alive\r\n\
              X-Trace: 1\r\nX-Api-Key: callers-own\r\nAccept-Encoding: gzip\r\nRange: bytes=0-1\r\n\
              X-Forwarded-For: 6.6.6.6\r\nAccept: */*\r\n\r\n",
            &up,
        );
        assert_eq!(
            out,
            "GET /v1/x?a=1&key=s3%20cr%26t HTTP/1.1\r\nhost: api.internal:443\r\nAccept: */*\r\n\
             X-Api-Key: s3 cr&t\r\naccept-encoding: identity\r\nx-forwarded-for: 10.0.0.7\r\n"
        );
        let mut framed = out.into_bytes();
        finish_head(&mut framed, Framing::Length(3));
        assert!(framed.ends_with(b"content-length: 3\r\n\r\n"));
    }

    #[test]
    fn charsets_are_read_as_the_laxest_parser_reads_them() {
        use crate::http::{ascii_compatible, readable_charset};
        for ok in [
            &b"text/plain"[..],
            b"text/plain; charset=utf-8",
            b"application/json;charset=\"ISO-8859-15\"",
            b"text/html; charset=windows-1252",
        ] {
            assert!(readable_charset(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"text/plain; charset=utf-16"[..],
            b"text/plain; charset=utf-8; charset=utf-16",
            b"text/plain; charset = utf-16",
            b"text/plain;charset=utf-8, text/plain;charset=utf-16",
            b"text/plain; x=\"a;charset=utf-8;b\"; charset=utf-16",
            b"text/plain; charset=windows-1200",
            b"text/plain; charset=iso-8859-17",
            b"text/plain; charset=utf-7",
        ] {
            assert!(!readable_charset(bad), "{}", String::from_utf8_lossy(bad));
        }
        assert!(!ascii_compatible(b"windows-12001") && ascii_compatible(b"windows-874"));
    }

    #[test]
    fn paths_rules_see_are_canonical_and_decoded() {
        for bad in [
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/a%2fb",
            "/a%2E%2E/b",
            "/a\\b",
            "/a%00",
        ] {
            assert!(!canonical(bad), "{bad}");
        }
        assert!(canonical("/v1/customers/42"));
        assert_eq!(
            rule_path("/v1/ex%70ort;jsessionid=1").as_deref(),
            Some("/v1/export")
        );
        assert_eq!(rule_path("/v1/a;x/..;y/b"), None);
        assert_eq!(rule_path("/v1/%zz"), None);
        let mut out = Vec::new();
        push_chunk(&mut out, b"");
        push_chunk(&mut out, &[b'x'; 26]);
        assert!(out.starts_with(b"1a\r\nxx"));
    }
}
