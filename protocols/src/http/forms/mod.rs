//! Method overrides in forms: `_method` in a query string or a POST body,
//! which Rails, Laravel, Express's method-override and PHP frameworks run as
//! the request's method. Names are read as the laxest of those parsers reads
//! them (the union), so no spelling steps around the scan; bodies are scanned
//! as they stream, in bounded memory ([`FormScan`]).

use super::Request;

mod json;
mod multipart;
mod urlencoded;

pub use json::JsonScan;
pub use multipart::MultipartScan;
pub use urlencoded::UrlencodedScan;

/// Does the query string carry a method override (`_method=DELETE`, also
/// percent-encoded as `%5Fmethod`, any case), which Rails, Laravel and
/// Express's method-override run as the request's method?
#[cfg(test)]
fn query_overrides_method(target: &str) -> bool {
    target
        .split_once('?')
        .is_some_and(|(_, query)| form_overrides_method(query.as_bytes()))
}

/// Does a form (`a=1&b=2`, a query string or an urlencoded body) name a
/// method override?
#[cfg(test)]
fn form_overrides_method(form: &[u8]) -> bool {
    !form_override_values(form).is_empty()
}

/// The values of the method overrides a form (a query string) names.
pub fn form_override_values(form: &[u8]) -> Vec<Vec<u8>> {
    form.split(|&b| b == b'&' || b == b';')
        .filter_map(|pair| {
            let mut parts = pair.splitn(2, |&b| b == b'=');
            let name = parts.next().unwrap_or_default();
            overrides_name(&percent_decode_form(name))
                .then(|| percent_decode_form(parts.next().unwrap_or_default()))
        })
        .collect()
}

/// A form name as a framework decodes it (`%5Fmethod`, `_%6Dethod`, `+`).
fn percent_decode_form(name: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let hex = name
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (name[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'+', _) => {
                decoded.push(b' ');
                i += 1;
            }
            (b'%', Some(b)) => {
                decoded.push(b);
                i += 3;
            }
            (b, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    decoded
}

/// Is this decoded field name `_method` as any of the frameworks that honour
/// it reads it: leading spaces and brackets dropped (PHP, Rack 2, qs), cut at
/// a bracket (an array: `_method[]`), NUL or whitespace (PHP's multipart
/// names), and `.` read as `_` (PHP: `.method`). Refusing a name one of them
/// reads differently is the safe side.
pub fn overrides_name(decoded: &[u8]) -> bool {
    // Rack and qs: leading brackets dropped, the name cut at the first bracket.
    let dropped = {
        let start = decoded
            .iter()
            .position(|&b| !matches!(b, b' ' | b'[' | b']'))
            .unwrap_or(decoded.len());
        decoded[start..].to_vec()
    };
    // PHP: a `[` with no `]` after it reads as `_` (`[method`).
    let php: Vec<u8> = {
        let start = decoded
            .iter()
            .position(|&b| b != b' ')
            .unwrap_or(decoded.len());
        let rest = &decoded[start..];
        let last_close = rest.iter().rposition(|&b| b == b']');
        let closed = |i: usize| last_close.is_some_and(|c| c > i);
        rest.iter()
            .enumerate()
            .map(|(i, &b)| if b == b'[' && !closed(i) { b'_' } else { b })
            .collect()
    };
    [dropped, php].iter().any(|name| {
        let end = name
            .iter()
            .position(|&b| matches!(b, b'[' | b']' | 0) || b.is_ascii_whitespace())
            .unwrap_or(name.len());
        let name = &name[..end];
        name.len() == 7
            && name.iter().zip(b"_method").all(|(&a, &b)| {
                (if a == b'.' {
                    b'_'
                } else {
                    a.to_ascii_lowercase()
                }) == b
            })
    })
}

/// A request body frameworks read form fields from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    Urlencoded,
    /// With its boundary.
    Multipart(Vec<u8>),
    /// Laravel reads a JSON body's top-level keys as the request's fields,
    /// `_method` included.
    Json,
}

/// Whether the body may be read as a form, as the laxest framework reads its
/// `Content-Type` (the media type before any `;`, `,` or space; none at all is
/// a form to Rack). `Err`: a body Sluice cannot scan.
pub fn form_kind(req: &Request<'_, '_>) -> Result<Option<Form>, &'static str> {
    let mut types = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-type"));
    let value = types.next().map(|h| h.value).unwrap_or_default();
    if types.next().is_some() {
        return Err("two Content-Type headers are not accepted");
    }
    let value = value.trim_ascii();
    let media_end = value
        .iter()
        .position(|&b| matches!(b, b';' | b',') || b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let media = &value[..media_end];
    let form =
        if media.is_empty() || media.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
            Some(Form::Urlencoded)
        } else if media.len() > 10 && media[..10].eq_ignore_ascii_case(b"multipart/") {
            // Rack reads `multipart/mixed` and kin as forms too. Frameworks
            // find the boundary differently (first, last, inside another
            // word): one plain `boundary` parameter is the only unambiguous one.
            let mentions = value
                .windows(8)
                .filter(|w| w.eq_ignore_ascii_case(b"boundary"))
                .count();
            let plain = |b: &Vec<u8>| {
                !b.is_empty()
                    && b.len() <= 200
                    && mentions == 1
                    && !b
                        .iter()
                        .any(|&c| matches!(c, b';' | b',' | b'"') || c.is_ascii_whitespace())
            };
            let boundary = parameter(value, b"boundary")
                .filter(plain)
                .ok_or("a multipart body needs one plain boundary of 1 to 200 bytes")?;
            Some(Form::Multipart(boundary))
        } else {
            None
        };
    // Laravel reads the body as JSON when the header mentions `/json` or
    // `+json` anywhere (`text/plain; x=/json` included).
    let json = contains_ignore_case(value, b"/json") || contains_ignore_case(value, b"+json");
    let form = match (form, json) {
        (None, true) => Some(Form::Json),
        (Some(_), true) => {
            return Err("a Content-Type that reads as a form and as JSON is not accepted")
        }
        (form, false) => form,
    };
    // A form in a charset that is not ASCII-compatible (UTF-16, EBCDIC)
    // spells `_method` in bytes the scans do not read as it; frameworks that
    // decode by the declared charset would.
    if form.is_some() && !super::readable_charset(value) {
        return Err("a form or JSON body in a charset other than UTF-8, ASCII, ISO-8859 or Windows code pages is not accepted: Sluice reads bodies for `_method` as ASCII-compatible text");
    }
    // A compressed form would be read by the framework and not by Sluice.
    let encoded = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("content-encoding")
            && !h.value.trim_ascii().eq_ignore_ascii_case(b"identity")
    });
    if form.is_some() && encoded {
        return Err("a compressed form body (or one without a Content-Type) is not accepted: Sluice reads forms for `_method`");
    }
    Ok(form)
}

fn contains_ignore_case(v: &[u8], needle: &[u8]) -> bool {
    v.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// A parameter's value in a header value (`; boundary="x"`), unquoted.
pub(crate) fn parameter(value: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let mut i = 0;
    while i + name.len() < value.len() {
        let at = value[i..i + name.len()].eq_ignore_ascii_case(name)
            && value[i + name.len()] == b'='
            && (i == 0 || matches!(value[i - 1], b';' | b' ' | b'\t' | b','));
        if !at {
            i += 1;
            continue;
        }
        let v = &value[i + name.len() + 1..];
        return Some(if let Some(q) = v.strip_prefix(b"\"") {
            q.iter().take_while(|&&b| b != b'"').copied().collect()
        } else {
            v.iter()
                .take_while(|&&b| !matches!(b, b';' | b',') && !b.is_ascii_whitespace())
                .copied()
                .collect()
        });
    }
    None
}

const FORM_OVERRIDE: &str = "`_method` in a form body is not accepted (frameworks run it as the method; guardrails judge the request's own method)";

/// Looks for a method override in a form body as it streams.
pub enum FormScan {
    Urlencoded(UrlencodedScan),
    Multipart(MultipartScan),
    Json(JsonScan),
}

impl FormScan {
    pub fn new(form: &Form) -> FormScan {
        match form {
            Form::Urlencoded => FormScan::Urlencoded(UrlencodedScan::default()),
            Form::Multipart(boundary) => FormScan::Multipart(MultipartScan::new(boundary)),
            Form::Json => FormScan::Json(JsonScan::default()),
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<(), &'static str> {
        match self {
            FormScan::Urlencoded(s) => s.feed(data),
            FormScan::Multipart(s) => s.feed(data),
            FormScan::Json(s) => s.feed(data),
        }
    }

    /// The body ended: its last field counts too.
    pub fn finish(&mut self) -> Result<(), &'static str> {
        match self {
            FormScan::Urlencoded(s) => s.end_name(),
            FormScan::Multipart(s) => s.finish(),
            FormScan::Json(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_bodies_naming_an_override_at_the_top_level_are_caught_split_anywhere() {
        let caught = [
            &br#"{"_method":"DELETE"}"#[..],
            br#" { "a": {"_method": 1}, "_method" : "DELETE" }"#,
            br#"{"\u005fmethod":"DELETE"}"#,
            br#"{"x":"a\"b,\"_method","_METHOD":1}"#,
            // An escaped backslash ends before the quote: the string ends.
            br#"{"a":"\\","_method":1}"#,
        ];
        let passed = [
            // An escaped quote inside a value does not end it: a scanner that
            // ignored escapes would read `_method` as a key here.
            &br#"{"a":"\",\"_method","b":1}"#[..],
            &br#"{"a":{"_method":"DELETE"}}"#[..],
            br#"["_method","DELETE"]"#,
            br#"{"note":"_method","m":"_method"}"#,
            br#"{"x":"\"_method\""}"#,
        ];
        for (body, want) in caught
            .iter()
            .map(|b| (b, true))
            .chain(passed.iter().map(|b| (b, false)))
        {
            for cut in 0..=body.len() {
                let mut s = super::FormScan::new(&super::Form::Json);
                let r = s
                    .feed(&body[..cut])
                    .and_then(|()| s.feed(&body[cut..]))
                    .and_then(|()| s.finish());
                assert_eq!(
                    r.is_err(),
                    want,
                    "{} cut at {cut}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn method_overrides_in_the_query_are_found_however_spelled() {
        for t in [
            "/v1/c/42?_method=DELETE",
            "/v1/c/42?a=1&_METHOD=delete",
            "/v1/c/42?%5Fmethod=DELETE",
            "/v1/c/42?_%6Dethod=DELETE",
            "/v1/c/42?x=1;_method",
            "/v1/c/42?.method=DELETE",
            "/v1/c/42?%2Emethod=DELETE",
            "/v1/c/42?[method=DELETE",
            "/v1/c/42?+_method=DELETE",
            "/v1/c/42?%20_method=DELETE",
            "/v1/c/42?_method%00x=DELETE",
            "/v1/c/42?_method[]=DELETE",
        ] {
            assert!(super::query_overrides_method(t), "{t}");
        }
        for t in [
            "/v1/c/42",
            "/v1/c/42?method=DELETE",
            "/v1/c/42?a=_method",
            "/_method",
        ] {
            assert!(!super::query_overrides_method(t), "{t}");
        }
    }

    #[test]
    fn multipart_bodies_naming_an_override_are_caught_split_anywhere() {
        let scan = |body: &[u8], cut: usize| {
            let mut s = super::MultipartScan::new(b"b");
            s.feed(&body[..cut])
                .and_then(|()| s.feed(&body[cut..]))
                .and_then(|()| s.finish())
        };
        let part = |headers: &str| {
            format!("--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n name=\"\r\n--b\r\n{headers}\r\n\r\nDELETE\r\n--b--\r\n")
        };
        for headers in [
            "Content-Disposition: form-data; name=\"_method\"",
            "Content-Disposition: form-data; name=_method",
            "content-disposition: form-data; NAME = \"_METHOD\"",
            "Content-Disposition: form-data; name=\".method\"",
            "Content-Disposition: form-data; name=\" _method\"",
            "Content-Disposition: form-data; name=\"_method[]\"",
            "Content-Disposition: form-data; name='_method'",
            "Content-Disposition: form-data; name=\"_meth\\od\"",
            "Content-Disposition: form-data; name=_method\tx",
            "Content-Disposition: form-data; name*=utf-8''%5Fmethod",
            "Content-Disposition: form-data; name*=UTF-8'en'_%6Dethod",
            "Content-ID: _method",
            "Content-Disposition: form-data;\r\n name=\"_method\"",
            "Content-Disposition: form-data; name=\"x\"\r\n; name=\"_method\"",
            "X-A: Content-Disposition: form-data; name=_method",
        ] {
            let body = part(headers);
            for cut in 0..=body.len() {
                assert!(
                    scan(body.as_bytes(), cut).is_err(),
                    "{headers} split at {cut}"
                );
            }
        }
        for headers in [
            "Content-Disposition: form-data; name=\"method\"",
            "Content-Disposition: form-data; filename=\"_method\"; name=\"file\"",
            "Content-Disposition: form-data; name=\"_method_x\"",
        ] {
            assert!(scan(part(headers).as_bytes(), 0).is_ok(), "{headers}");
        }
        // After a closing delimiter (PHP reads on), and with bare LF line ends.
        for body in [
            "--b--\r\n--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n",
            "--b\nContent-Disposition: form-data; name=\"_method\"\n\nDELETE\n--b--\n",
        ] {
            for cut in 0..=body.len() {
                assert!(scan(body.as_bytes(), cut).is_err(), "{body:?} split at {cut}");
            }
        }
        // Part data that spells a header is data.
        let data = "--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nname=\"_method\"\r\n--b--\r\n";
        assert!(scan(data.as_bytes(), 10).is_ok());
        // Headers padded past 8 KiB are refused rather than missed.
        let padded = part(&format!(
            "Content-Disposition: form-data; name={}_method",
            " ".repeat(9000)
        ));
        assert!(scan(padded.as_bytes(), 100).is_err());
    }

    #[test]
    fn urlencoded_bodies_naming_an_override_are_caught_split_anywhere() {
        let caught = |body: &[u8], cut: usize| {
            let mut s = super::FormScan::new(&super::Form::Urlencoded);
            s.feed(&body[..cut])
                .and_then(|()| s.feed(&body[cut..]))
                .and_then(|()| s.finish())
                .is_err()
        };
        let padded = format!("{}_method=PUT", "+".repeat(10_000));
        for body in [
            &b"a=1&_method=DELETE"[..],
            b"%5Fmethod=PUT",
            b"_%6Dethod=PUT",
            b"x=1;_method",
            b"a=1&.method=DELETE",
            b"%20_method=DELETE",
            b"_method[]=DELETE",
            b"_method%00x=DELETE",
            b"[_method]=DELETE",
            b"]_method=DELETE",
            b"_method]=DELETE",
            b"[[_method]=DELETE",
            b"]]]]]]]]_method=DELETE",
            b"%5B%5B_method=DELETE",
            b"[method=DELETE",
            padded.as_bytes(),
        ] {
            assert!(super::form_overrides_method(body) || body.len() > 100);
            for cut in 0..=body.len().min(40) {
                assert!(
                    caught(body, cut),
                    "{} at {cut}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        for body in [
            &b"method=PUT&note=_method"[..],
            b"a=_method&b=%5Fmethod",
            b"\x00\xff%zz&&==;",
            b"_methodx=1",
            b"_method.x=1&_method_x=2",
        ] {
            assert!(!super::form_overrides_method(body));
            for cut in 0..=body.len() {
                assert!(
                    !caught(body, cut),
                    "{} at {cut}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
}
