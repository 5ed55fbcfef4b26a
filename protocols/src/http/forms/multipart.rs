//! A multipart body's part headers, scanned as it streams ([`MultipartScan`]),
//! and the `name` parameters they carry.

use super::{overrides_name, percent_decode_form, FORM_OVERRIDE};

/// Reads a multipart body's part headers as it streams (the boundary from
/// `Content-Type`, each part's header block whole, at most 8 KiB), and looks
/// at each part's name. Parsers differ (PHP takes bare LF line ends and
/// folds lines without a colon into the one before; Rack 2 finds `name=` by a
/// regex across the block; parts after the closing delimiter still count to
/// PHP), so the reading is the union: delimiters at `LF--boundary`, header
/// blocks ending at an empty line with or without CR, the body read to its
/// end, and every `name=` / `name*=` anywhere in a header block, quoted with
/// `"` or `'` and backslash escapes, bare, or RFC 2231, plus `Content-ID` (a
/// name to Rack 2). Part data is skipped, never read as headers. Memory stays
/// bounded: the delimiter's length, or one header block.
pub struct MultipartScan {
    /// `LF--boundary`.
    delimiter: Vec<u8>,
    state: Part,
    buf: Vec<u8>,
    /// How much of `buf` has been searched for the end of a header block.
    searched: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Looking for the next delimiter (in the preamble, a part's data, or
    /// after a closing delimiter).
    Seeking,
    /// After a delimiter: the rest of its line.
    AfterDelimiter,
    Headers,
}

impl MultipartScan {
    const MAX_HEADERS: usize = 8 * 1024;

    pub fn new(boundary: &[u8]) -> Self {
        MultipartScan {
            delimiter: [&b"\n--"[..], boundary].concat(),
            state: Part::Seeking,
            // The first delimiter may open the body without a line end before it.
            buf: b"\n".to_vec(),
            searched: 0,
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<(), &'static str> {
        self.buf.extend_from_slice(data);
        loop {
            match self.state {
                Part::Seeking => match memchr::memmem::find(&self.buf, &self.delimiter) {
                    Some(at) => {
                        self.buf.drain(..at + self.delimiter.len());
                        self.state = Part::AfterDelimiter;
                    }
                    None => {
                        let keep = self.delimiter.len() - 1;
                        let cut = self.buf.len().saturating_sub(keep);
                        self.buf.drain(..cut);
                        return Ok(());
                    }
                },
                // `--` (a closing delimiter) or padding, then the line end;
                // a part may still follow (PHP reads past a closing one).
                Part::AfterDelimiter => match memchr::memchr(b'\n', &self.buf) {
                    Some(at) => {
                        let closing = self.buf.starts_with(b"--");
                        self.buf.drain(..at + 1);
                        if closing {
                            self.buf.splice(0..0, *b"\n");
                            self.state = Part::Seeking;
                        } else {
                            self.state = Part::Headers;
                            self.searched = 0;
                        }
                    }
                    None if self.buf.len() > 256 => {
                        return Err("a multipart delimiter line is malformed")
                    }
                    None => return Ok(()),
                },
                Part::Headers => {
                    let end = if self.buf.starts_with(b"\r\n") {
                        Some((0, 2))
                    } else if self.buf.starts_with(b"\n") {
                        Some((0, 1))
                    } else {
                        // An empty line, with or without CR.
                        let from = self.searched.saturating_sub(2);
                        let lf = memchr::memmem::find(&self.buf[from..], b"\n\n")
                            .map(|at| (from + at + 1, from + at + 2));
                        let crlf = memchr::memmem::find(&self.buf[from..], b"\n\r\n")
                            .map(|at| (from + at + 1, from + at + 3));
                        match (lf, crlf) {
                            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
                            (a, b) => a.or(b),
                        }
                    };
                    match end {
                        Some((at, skip)) => {
                            part_names_override(&self.buf[..at])?;
                            self.buf.drain(..skip);
                            // The data starts here; its delimiter brings its
                            // own line end, which an empty part shares.
                            self.buf.splice(0..0, *b"\n");
                            self.state = Part::Seeking;
                        }
                        None if self.buf.len() > Self::MAX_HEADERS => {
                            return Err("a multipart part's headers over 8 KiB are not accepted")
                        }
                        None => {
                            self.searched = self.buf.len();
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// The body ended inside a part's headers: they count as they are.
    pub fn finish(&mut self) -> Result<(), &'static str> {
        if self.state == Part::Headers {
            part_names_override(&self.buf)?;
        }
        Ok(())
    }
}

/// Whether one part's header block names a method override: any `name=` or
/// `name*=` parameter anywhere in it (across folded lines, inside any header,
/// as Rack 2 finds it), and `Content-ID`.
fn part_names_override(headers: &[u8]) -> Result<(), &'static str> {
    for line in headers.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-id") && overrides_name(value) {
                return Err(FORM_OVERRIDE);
            }
        }
    }
    // Every `name` parameter, whatever header or line it is on: the block
    // read as one run of parameters, after each `;`, `:` or line end.
    let flat: Vec<u8> = headers
        .iter()
        .map(|&b| {
            if matches!(b, b'\r' | b'\n' | b':') {
                b';'
            } else {
                b
            }
        })
        .collect();
    for (key, v) in disposition_params(&flat) {
        let decoded = if key.eq_ignore_ascii_case(b"name*") {
            // charset'language'percent-encoded
            let raw = v.rsplit(|&b| b == b'\'').next().unwrap_or(&v);
            percent_decode_form(raw)
        } else if key.eq_ignore_ascii_case(b"name") {
            v
        } else {
            continue;
        };
        if overrides_name(&decoded) {
            return Err(FORM_OVERRIDE);
        }
    }
    Ok(())
}

/// The `key=value` parameters of a `Content-Disposition` value, with quoted
/// values (`"..."` or `'...'`) unescaped (`\x` is `x`).
fn disposition_params(value: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < value.len() {
        // The key.
        while i < value.len() && (value[i] == b';' || value[i].is_ascii_whitespace()) {
            i += 1;
        }
        let k0 = i;
        while i < value.len() && !matches!(value[i], b'=' | b';') {
            i += 1;
        }
        let key = value[k0..i].trim_ascii().to_vec();
        if i >= value.len() || value[i] == b';' {
            continue;
        }
        i += 1; // '='
        while i < value.len() && value[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut v = Vec::new();
        match value.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                i += 1;
                while i < value.len() && value[i] != q {
                    if value[i] == b'\\' && i + 1 < value.len() {
                        i += 1;
                    }
                    v.push(value[i]);
                    i += 1;
                }
                i += 1;
            }
            _ => {
                while i < value.len() && value[i] != b';' {
                    v.push(value[i]);
                    i += 1;
                }
            }
        }
        out.push((key, v));
    }
    out
}
