//! Masking streams of JSON events as they flow: Server-Sent Events
//! (`text/event-stream`, how most LLM and push APIs stream their answers) and
//! JSON lines (`application/x-ndjson`, `jsonl`, `json-seq`, `stream+json`).
//!
//! Each event (SSE: up to its blank line; JSON lines: one line) is masked as
//! soon as its last byte arrives, so a stream is never held back by more than
//! the event in flight. What is held (the event's bytes and its line records)
//! is bounded by `max`, plus scratch of about three times the event.
//!
//! An SSE event's data is what `EventSource` hands the application (its `data:`
//! lines joined by `\n`), so that is what is read as JSON: field rules apply,
//! and escapes are decoded before detection (`jane\u0040example.com`). Data
//! that is not JSON (`[DONE]`, plain tokens) is masked as text, escaped runs
//! read as a lenient JSON parser would. Every other line (`event`, `id`,
//! comments, lines a client splits its own way) is masked the same way. Under
//! field rules an event clients may read differently (an unknown field, a line
//! separator other than CR and LF, data that is not JSON but could hold
//! fields) cuts the stream. A JSON line that is not JSON is masked as text, or
//! cuts the stream when field rules apply (they could not be).
//!
//! Each event is judged on its own: a value an application assembles from
//! several events (an LLM answer streamed token by token, `"jane"` then
//! `"@example.com"`) is never whole in any one of them, and is not masked.

use crate::json::{mask_escaped_runs, mask_json, FieldRules};
use crate::Masker;

/// The kinds of event stream masked event by event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Events {
    /// `text/event-stream`.
    Sse,
    /// One JSON value per line (a leading RS, as `json-seq` has, is kept).
    JsonLines,
}

impl Events {
    /// The kind of event stream a media type (without parameters) names.
    pub fn of_media_type(media: &[u8]) -> Option<Events> {
        const LINES: [&[u8]; 8] = [
            b"application/x-ndjson",
            b"application/ndjson",
            b"application/jsonl",
            b"application/x-jsonl",
            b"application/jsonlines",
            b"application/x-jsonlines",
            b"application/json-seq",
            b"application/stream+json",
        ];
        if media.eq_ignore_ascii_case(b"text/event-stream") {
            Some(Events::Sse)
        } else if LINES.iter().any(|m| media.eq_ignore_ascii_case(m)) {
            Some(Events::JsonLines)
        } else {
            None
        }
    }
}

/// Why a stream could not be masked (the caller cuts it: what was released
/// so far was masked, nothing after it is passed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError(pub String);

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Masks an event stream arriving in chunks; see the module docs.
pub struct EventMasker {
    kind: Events,
    masker: Masker,
    max: usize,
    /// The event in flight (bytes not yet released).
    buf: Vec<u8>,
    /// Where the next search for the event's end resumes (a line start).
    searched: usize,
    at_start: bool,
    /// Scratch, reused per event: line bounds, joined data, its masked copy.
    lines: Vec<Line>,
    data: Vec<u8>,
    doc: Vec<u8>,
}

/// A line of an SSE event: content `start..end`, terminator `end..next`.
#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
    next: usize,
    /// Where a `data` field's value starts (`None`: another field).
    data: Option<usize>,
}

impl Line {
    /// The line `buf[start..end]`: a field named `data` (exactly, as clients
    /// compare) has its value after the colon and one optional space.
    fn new(buf: &[u8], start: usize, end: usize, next: usize) -> Line {
        let content = &buf[start..end];
        let field_end = memchr::memchr(b':', content).unwrap_or(content.len());
        let data = (&content[..field_end] == b"data").then(|| {
            let v = start + field_end + 1;
            if v < end && buf[v] == b' ' {
                v + 1
            } else {
                v.min(end)
            }
        });
        Line {
            start,
            end,
            next,
            data,
        }
    }
}

impl EventMasker {
    /// `max`: the largest event held (a larger one is an error).
    pub fn new(kind: Events, masker: Masker, max: usize) -> EventMasker {
        EventMasker {
            kind,
            masker,
            max,
            buf: Vec::new(),
            searched: 0,
            at_start: true,
            lines: Vec::new(),
            data: Vec::new(),
            doc: Vec::new(),
        }
    }

    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    pub fn into_masker(self) -> Masker {
        self.masker
    }

    /// Takes the next chunk; appends every event it completes, masked, to `out`.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        rules: &FieldRules,
        out: &mut Vec<u8>,
    ) -> Result<(), EventError> {
        self.buf.extend_from_slice(chunk);
        self.release(rules, out, false)
    }

    /// The stream ended: masks and releases what is held (an SSE client
    /// drops an unterminated last event, but it is masked all the same).
    pub fn finish(&mut self, rules: &FieldRules, out: &mut Vec<u8>) -> Result<(), EventError> {
        self.release(rules, out, true)
    }

    fn release(
        &mut self,
        rules: &FieldRules,
        out: &mut Vec<u8>,
        at_end: bool,
    ) -> Result<(), EventError> {
        if self.at_start {
            if !at_end && self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Ok(());
            }
            if self.buf.starts_with(BOM) {
                out.extend_from_slice(BOM);
                self.buf.drain(..BOM.len());
            }
            self.at_start = false;
        }
        // Events are masked from `at` on; the buffer is drained once, at the
        // end (a chunk of many tiny events costs one move, not one each).
        let mut at = 0;
        let result = loop {
            let end = match self.kind {
                Events::Sse => self.event_end(at_end),
                Events::JsonLines => self.line_end(),
            };
            let held = self.buf.len() - at + self.lines.len() * std::mem::size_of::<Line>();
            let end = match end {
                Some(n) => n,
                None if at_end && at < self.buf.len() => self.buf.len(),
                None if held > self.max => break Err(self.too_large()),
                None => break Ok(()),
            };
            if end - at > self.max {
                break Err(self.too_large());
            }
            let masked = match self.kind {
                Events::Sse => self.mask_event(at, end, rules, out),
                Events::JsonLines => self.mask_line(at, end, rules, out),
            };
            if let Err(e) = masked {
                break Err(e);
            }
            at = end;
            self.searched = at;
            if at == self.buf.len() {
                break Ok(());
            }
        };
        self.buf.drain(..at);
        self.searched -= at;
        for l in &mut self.lines {
            l.start -= at;
            l.end -= at;
            l.next -= at;
            l.data = l.data.map(|v| v - at);
        }
        result
    }

    fn too_large(&self) -> EventError {
        EventError(format!(
            "an event larger than {} bytes cannot be masked",
            self.max
        ))
    }

    /// The end of the next JSON line (after its `\n`).
    fn line_end(&mut self) -> Option<usize> {
        match memchr::memchr(b'\n', &self.buf[self.searched..]) {
            Some(i) => Some(self.searched + i + 1),
            None => {
                self.searched = self.buf.len();
                None
            }
        }
    }

    /// The end of the next SSE event (after its blank line), recording its
    /// lines. Lines end in CRLF, CR or LF; a CR as the last byte held may be
    /// the start of a CRLF, so it waits for the next byte.
    fn event_end(&mut self, at_end: bool) -> Option<usize> {
        let mut start = self.searched;
        loop {
            let rest = &self.buf[start..];
            let Some(i) = memchr::memchr2(b'\r', b'\n', rest) else {
                self.searched = start;
                return None;
            };
            let end = start + i;
            let next = match (self.buf[end], self.buf.get(end + 1)) {
                (b'\r', Some(b'\n')) => end + 2,
                (b'\r', None) if !at_end => {
                    self.searched = start;
                    return None;
                }
                _ => end + 1,
            };
            if end == start {
                // A blank line: the event is complete.
                return Some(next);
            }
            self.lines.push(Line::new(&self.buf, start, end, next));
            start = next;
        }
    }

    /// Masks one SSE event (`buf[at..end]`, its lines recorded) into `out`.
    ///
    /// Under field rules the event must read the same to every client: a
    /// field other than `data`, `event`, `id` and `retry` (` data`, or a
    /// line a hand-written client splits differently), a byte some line
    /// splitters end lines at (VT, FF, FS, GS, RS, NEL, LS, PS), or data
    /// that is not JSON but could hold fields cuts the stream.
    fn mask_event(
        &mut self,
        at: usize,
        end: usize,
        rules: &FieldRules,
        out: &mut Vec<u8>,
    ) -> Result<(), EventError> {
        // At the end of the stream, an unterminated last line.
        let recorded = self.lines.last().map_or(at, |l| l.next);
        if recorded < end
            && !self.buf[recorded..end]
                .iter()
                .all(|&b| b == b'\r' || b == b'\n')
        {
            self.lines.push(Line::new(&self.buf, recorded, end, end));
        }
        let event = &self.buf[at..end];
        if memchr::memchr(0, event).is_some() {
            self.lines.clear();
            return Err(wide_text());
        }
        let strict = !rules.is_empty();
        if strict {
            // 0x85 alone too: a client decoding the stream as ISO-8859-1
            // (`requests` does, without a charset) splits lines at it.
            let splits = event
                .iter()
                .any(|&b| matches!(b, 0x0B | 0x0C | 0x1C..=0x1E | 0x85))
                || memchr::memmem::find(event, b"\xC2\x85").is_some()
                || memchr::memmem::find(event, b"\xE2\x80\xA8").is_some()
                || memchr::memmem::find(event, b"\xE2\x80\xA9").is_some();
            let unknown = self.lines.iter().any(|l| {
                let content = &self.buf[l.start..l.end];
                let field = &content[..memchr::memchr(b':', content).unwrap_or(content.len())];
                l.data.is_none()
                    && !field.is_empty()
                    && !matches!(field, b"event" | b"id" | b"retry")
            });
            if splits || unknown {
                self.lines.clear();
                return Err(EventError(
                    "an event that clients may read differently (an unknown field, or a line separator other than CR and LF), so field rules cannot be applied to it".into(),
                ));
            }
        }
        // The data as the client sees it, masked as JSON or else as text.
        self.data.clear();
        let mut first = true;
        for l in self.lines.iter().filter(|l| l.data.is_some()) {
            if !first {
                self.data.push(b'\n');
            }
            first = false;
            self.data
                .extend_from_slice(&self.buf[l.data.unwrap_or(l.end)..l.end]);
        }
        let has_data = self.lines.iter().any(|l| l.data.is_some());
        let mut pieces_from_doc = false;
        if has_data {
            self.doc.clear();
            self.doc.extend_from_slice(&self.data);
            let before = self.masker.counts.clone();
            let lines = self.lines.iter().filter(|l| l.data.is_some()).count();
            match mask_json(&mut self.doc, &mut self.masker, rules) {
                // JSON keeps its line breaks (they are whitespace between
                // tokens), so the masked data splits back into as many lines.
                Ok(_) if memchr::memchr_iter(b'\n', &self.doc).count() + 1 == lines => {
                    pieces_from_doc = true;
                }
                _ => {
                    self.masker.counts = before;
                    // What could hold a field (`{"name":"Jane","x":NaN}`,
                    // `[NaN,1]`, half a document) is not passed without its
                    // rules; `[DONE]` is.
                    if strict
                        && self.data.trim_ascii() != b"[DONE]"
                        && self
                            .data
                            .iter()
                            .any(|b| matches!(b, b'{' | b'[' | b'"' | b'\'' | b':'))
                    {
                        self.lines.clear();
                        return Err(EventError(
                            "event data that is not JSON, so its field rules cannot be applied"
                                .into(),
                        ));
                    }
                    self.doc.clear();
                    self.doc.extend_from_slice(&self.data);
                    mask_as_text(&mut self.masker, &mut self.doc);
                }
            }
        }
        // Text masking keeps lengths, so its lines are cut where the
        // original's were; JSON's are cut at its own line breaks. Every
        // other line is masked as text, escapes read decoded (a client that
        // splits lines its own way may read one as data).
        let mut from = 0;
        for l in &self.lines {
            match l.data {
                Some(v) => {
                    out.extend_from_slice(&self.buf[l.start..v]);
                    let len = if pieces_from_doc {
                        memchr::memchr(b'\n', &self.doc[from..]).unwrap_or(self.doc.len() - from)
                    } else {
                        l.end - v
                    };
                    out.extend_from_slice(&self.doc[from..from + len]);
                    from = (from + len + 1).min(self.doc.len());
                }
                None => {
                    let line = out.len();
                    out.extend_from_slice(&self.buf[l.start..l.end]);
                    mask_as_text(&mut self.masker, &mut out[line..]);
                }
            }
            out.extend_from_slice(&self.buf[l.end..l.next]);
        }
        let tail = self.lines.last().map_or(at, |l| l.next);
        out.extend_from_slice(&self.buf[tail..end]);
        self.lines.clear();
        // A long stream keeps no more scratch than a usual event needs.
        for v in [&mut self.data, &mut self.doc] {
            if v.capacity() > SCRATCH {
                *v = Vec::new();
            }
        }
        if self.lines.capacity() > SCRATCH / std::mem::size_of::<Line>() {
            self.lines = Vec::new();
        }
        Ok(())
    }

    /// Masks one JSON line (`buf[at..end]`) into `out`.
    fn mask_line(
        &mut self,
        at: usize,
        end: usize,
        rules: &FieldRules,
        out: &mut Vec<u8>,
    ) -> Result<(), EventError> {
        let line = &self.buf[at..end];
        let content_end = if line.ends_with(b"\n") {
            line.len() - 1
        } else {
            line.len()
        };
        let rs = line
            .iter()
            .take_while(|&&b| b == 0x1E)
            .count()
            .min(content_end);
        let content = &line[rs..content_end];
        if memchr::memchr(0, content).is_some() {
            return Err(wide_text());
        }
        if content.iter().all(u8::is_ascii_whitespace) {
            out.extend_from_slice(line);
            return Ok(());
        }
        self.doc.clear();
        self.doc.extend_from_slice(content);
        let before = self.masker.counts.clone();
        if mask_json(&mut self.doc, &mut self.masker, rules).is_err() {
            self.masker.counts = before;
            if !rules.is_empty() {
                return Err(EventError(
                    "a line of the JSON stream is not JSON, so its field rules cannot be applied"
                        .into(),
                ));
            }
            self.doc.clear();
            self.doc.extend_from_slice(content);
            mask_as_text(&mut self.masker, &mut self.doc);
        }
        out.extend_from_slice(&line[..rs]);
        out.extend_from_slice(&self.doc);
        out.extend_from_slice(&line[content_end..]);
        if self.doc.capacity() > SCRATCH {
            self.doc = Vec::new();
        }
        Ok(())
    }
}

/// Text that is not JSON, masked in place: the detectors, then escaped runs
/// read decoded (a lenient JSON client may still decode them).
fn mask_as_text(masker: &mut Masker, text: &mut [u8]) {
    masker.mask_value(text, None);
    mask_escaped_runs(text, masker);
}

/// A NUL never belongs in SSE or JSON text: it is UTF-16/32 that a client
/// sniffing each line's encoding (`json.loads` on bytes) would decode, and
/// the detectors cannot read.
fn wide_text() -> EventError {
    EventError("an event in UTF-16/32 (a NUL byte), which Sluice cannot mask".into())
}

/// Scratch kept between events (bytes); more is freed after the event.
const SCRATCH: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Profile;

    fn masker() -> Masker {
        Masker::new(Profile::new(&["email", "credit_card", "ssn"], &[]).unwrap())
    }

    /// The stream masked whole, and fed split at every byte: both the same.
    fn run(kind: Events, input: &[u8], rules: &FieldRules) -> Result<Vec<u8>, EventError> {
        let mut whole = Vec::new();
        let mut m = EventMasker::new(kind, masker(), 1 << 16);
        m.feed(input, rules, &mut whole)?;
        m.finish(rules, &mut whole)?;
        for cut in 0..=input.len() {
            let mut out = Vec::new();
            let mut m = EventMasker::new(kind, masker(), 1 << 16);
            m.feed(&input[..cut], rules, &mut out)?;
            m.feed(&input[cut..], rules, &mut out)?;
            m.finish(rules, &mut out)?;
            assert_eq!(out, whole, "split at {cut}");
        }
        let mut out = Vec::new();
        let mut m = EventMasker::new(kind, masker(), 1 << 16);
        for b in input {
            m.feed(std::slice::from_ref(b), rules, &mut out)?;
        }
        m.finish(rules, &mut out)?;
        assert_eq!(out, whole, "byte by byte");
        Ok(whole)
    }

    fn no_rules() -> FieldRules {
        FieldRules::new(&[]).unwrap()
    }

    fn has(out: &[u8], needle: &str) -> bool {
        memchr::memmem::find(out, needle.as_bytes()).is_some()
    }

    #[test]
    fn escaped_values_in_sse_data_are_masked_split_anywhere() {
        let input = b"event: delta\r\ndata: {\"note\":\"jane.doe\\u0040example.com\",\"n\":1}\r\n\r\ndata: [DONE]\n\n";
        let out = run(Events::Sse, input, &no_rules()).unwrap();
        assert!(
            !has(&out, "jane.doe\\u0040example.com"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert!(has(&out, "event: delta\r\ndata: {\"note\":\"*"));
        assert!(has(&out, "data: [DONE]\n\n"));
        assert_eq!(out.len(), input.len());
    }

    #[test]
    fn json_across_data_lines_and_line_ending_styles_is_read_as_joined() {
        // `EventSource` joins data lines with `\n`; CR alone ends a line.
        for input in [
            &b"data: {\"a\":\r\ndata: \"4111\\u002D1111-1111-1111\"}\r\n\r\n"[..],
            b"data: {\"a\":\rdata: \"4111\\u002D1111-1111-1111\"}\r\r",
            b"data:{\"a\":\ndata:\"4111\\u002D1111-1111-1111\"}\n\n",
        ] {
            let out = run(Events::Sse, input, &no_rules()).unwrap();
            assert!(
                !has(&out, "4111\\u002D1111"),
                "{}",
                String::from_utf8_lossy(&out)
            );
            assert_eq!(out.len(), input.len());
        }
    }

    #[test]
    fn field_rules_apply_inside_sse_data_and_other_fields_are_masked_as_text() {
        let rules = FieldRules::new(&[("$.ssn", "full")]).unwrap();
        let input =
            b": note for jane@example.com\nid: 7\ndata: {\"ssn\":123456789,\"ok\":true}\n\n";
        let out = run(Events::Sse, input, &rules).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("123456789"), "{text}");
        assert!(!text.contains("jane@example.com"), "{text}");
        assert!(text.contains("id: 7\ndata: {\"ssn\":\""), "{text}");
    }

    #[test]
    fn a_stream_with_nothing_to_mask_passes_byte_for_byte() {
        let input = b"\xEF\xBB\xBFretry: 100\n\nevent: a\ndata: {\"x\":\"caf\\u00e9\"}\n\ndata: plain text\ndata\n\n:\n\n";
        assert_eq!(run(Events::Sse, input, &no_rules()).unwrap(), input);
        let lines = b"{\"a\":1}\n\n\x1E{\"b\":\"\\u00e9\"}\r\n[1,2]";
        assert_eq!(run(Events::JsonLines, lines, &no_rules()).unwrap(), lines);
    }

    #[test]
    fn a_bom_does_not_hide_the_first_data_field() {
        let input = b"\xEF\xBB\xBFdata: {\"e\":\"jane\\u0040example.com\"}\n\n";
        let out = run(Events::Sse, input, &no_rules()).unwrap();
        assert!(
            !has(&out, "jane\\u0040"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn json_lines_are_masked_each_and_refused_when_rules_cannot_apply() {
        let input = b"{\"e\":\"jane\\u0040example.com\"}\n\x1E{\"c\":\"4111 1111 1111 1111\"}\n";
        let out = run(Events::JsonLines, input, &no_rules()).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.contains("jane\\u0040") && !text.contains("4111 1111 1111 1111"),
            "{text}"
        );
        // Not JSON, but a lenient parser reads it (NaN): escapes still seen.
        let lenient = b"{\"e\":\"jane\\u0040example.com\",\"x\":NaN}\n";
        let out = run(Events::JsonLines, lenient, &no_rules()).unwrap();
        assert!(
            !has(&out, "jane\\u0040"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let rules = FieldRules::new(&[("$.ssn", "full")]).unwrap();
        assert!(run(Events::JsonLines, lenient, &rules).is_err());
    }

    #[test]
    fn an_event_larger_than_the_limit_is_an_error_not_a_pass() {
        let mut m = EventMasker::new(Events::Sse, masker(), 64);
        let mut out = Vec::new();
        let big = format!("data: {}\n", "x".repeat(100));
        assert!(m.feed(big.as_bytes(), &no_rules(), &mut out).is_err());
        assert!(out.is_empty());
        let mut m = EventMasker::new(Events::JsonLines, masker(), 64);
        assert!(m
            .feed("7".repeat(100).as_bytes(), &no_rules(), &mut out)
            .is_err());
    }

    #[test]
    fn lines_other_clients_split_differently_are_read_decoded_or_refused_under_rules() {
        // A vertical tab (str.splitlines), a bare CR inside what a naive
        // `split("\n")` client reads as one JSON line, a leading space.
        let inputs: [&[u8]; 3] = [
            b"event: x\x0Bdata: {\"e\":\"jane\\u0040example.com\"}\n\n",
            b"data: {\"a\":\"x\",\r\"e\":\"jane\\u0040example.com\"}\n\n",
            b" data: {\"e\":\"jane\\u0040example.com\"}\n\n",
        ];
        let rules = FieldRules::new(&[("$.ssn", "full")]).unwrap();
        for input in inputs {
            let out = run(Events::Sse, input, &no_rules()).unwrap();
            assert!(
                !has(&out, "jane\\u0040"),
                "{}",
                String::from_utf8_lossy(&out)
            );
            assert!(
                run(Events::Sse, input, &rules).is_err(),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        // Data that is not JSON but could hold fields is refused under rules;
        // plain tokens such as `[DONE]` pass.
        let nan = b"data: {\"ssn\":\"123-45-6789\",\"x\":NaN}\n\n";
        assert!(run(Events::Sse, nan, &rules).is_err());
        let done = b"id: 1\ndata: [DONE]\n\n";
        assert_eq!(run(Events::Sse, done, &rules).unwrap(), done);
    }

    #[test]
    fn an_event_of_many_lines_counts_its_line_records_against_the_limit() {
        let mut m = EventMasker::new(Events::Sse, masker(), 64 * 1024);
        let lines = "a\n".repeat(4000);
        assert!(m
            .feed(lines.as_bytes(), &no_rules(), &mut Vec::new())
            .is_err());
        // Many tiny events in one chunk are each released.
        let mut m = EventMasker::new(Events::Sse, masker(), 64 * 1024);
        let mut out = Vec::new();
        let tiny = "data: {}\n\n".repeat(20_000);
        m.feed(tiny.as_bytes(), &no_rules(), &mut out).unwrap();
        assert_eq!(out, tiny.as_bytes());
    }

    #[test]
    fn a_nul_in_an_event_or_line_is_wide_text_and_cuts_the_stream() {
        let utf16: Vec<u8> = "{\"e\":\"jane@example.com\"}"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let mut lines = b"{\"ok\":1}\n".to_vec();
        lines.extend_from_slice(&utf16);
        lines.push(b'\n');
        assert!(run(Events::JsonLines, &lines, &no_rules()).is_err());
        let mut sse = b"data: ".to_vec();
        sse.extend_from_slice(&utf16);
        sse.extend_from_slice(b"\n\n");
        assert!(run(Events::Sse, &sse, &no_rules()).is_err());
    }

    #[test]
    fn media_types() {
        assert_eq!(
            Events::of_media_type(b"Text/Event-Stream"),
            Some(Events::Sse)
        );
        assert_eq!(
            Events::of_media_type(b"application/x-ndjson"),
            Some(Events::JsonLines)
        );
        assert_eq!(
            Events::of_media_type(b"application/stream+json"),
            Some(Events::JsonLines)
        );
        assert_eq!(Events::of_media_type(b"application/json"), None);
    }
}
