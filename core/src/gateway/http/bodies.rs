//! Response bodies: passed as framed, masked whole (JSON), event by event
//! (SSE, JSON lines), or through the streaming masker (other text).

use super::*;

/// No masking: the body passes as framed (chunked bytes as they are, checked).
pub(super) async fn pass_body<C: AsyncWriteRent, U: AsyncReadRent>(
    client: &mut C,
    up: &mut U,
    ubuf: &mut Vec<u8>,
    mut head: Vec<u8>,
    framing: Framing,
) -> Relayed {
    // The head goes out with the first piece of the body, in one write.
    let head_len = head.len();
    let mut total = 0u64;
    let mut decoder = ChunkedDecoder::new(u64::MAX);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut first = true;
    loop {
        let (take, done) = match framing {
            Framing::None => (0, true),
            Framing::Length(_) => {
                let n = (ubuf.len() as u64).min(left) as usize;
                left -= n as u64;
                (n, left == 0)
            }
            Framing::Chunked => {
                let mut checked = 0;
                let done = loop {
                    let r = decoder
                        .decode(&ubuf[checked..])
                        .map_err(|e| e.to_string())?;
                    checked += r.consumed;
                    if r.done || r.consumed == 0 {
                        break r.done;
                    }
                };
                (checked, done)
            }
            Framing::UntilClose => (ubuf.len(), false),
        };
        if first {
            head.extend_from_slice(&ubuf[..take]);
            let (res, _) = client.write_all(std::mem::take(&mut head)).await;
            res.map_err(|e| e.to_string())?;
            first = false;
        } else if take > 0 {
            write_range(client, ubuf, 0..take)
                .await
                .map_err(|e| e.to_string())?;
        }
        ubuf.drain(..take);
        total += take as u64;
        if done {
            return Ok((total + head_len as u64, Vec::new()));
        }
        if !fill(up, ubuf).await? {
            return if framing == Framing::UntilClose {
                Ok((total + head_len as u64, Vec::new()))
            } else {
                Err("the upstream closed the connection mid-body".into())
            };
        }
    }
}

/// Reads a whole response body (decoding chunks), bounded by `max`.
pub(super) async fn whole_body<U: AsyncReadRent>(
    up: &mut U,
    ubuf: &mut Vec<u8>,
    framing: Framing,
    max: u64,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            if n > max {
                return Err(format!(
                    "a {n}-byte body is larger than max_message and cannot be masked"
                ));
            }
            while (ubuf.len() as u64) < n {
                if !fill(up, ubuf).await? {
                    return Err("the upstream closed the connection mid-body".into());
                }
            }
            body.extend(ubuf.drain(..n as usize));
        }
        Framing::Chunked => {
            let mut d = ChunkedDecoder::new(max);
            loop {
                let r = d.decode(ubuf).map_err(|e| e.to_string())?;
                body.extend_from_slice(&ubuf[r.data.clone()]);
                ubuf.drain(..r.consumed);
                if r.done {
                    break;
                }
                if r.consumed == 0 && !fill(up, ubuf).await? {
                    return Err("the upstream closed the connection mid-body".into());
                }
            }
        }
        Framing::UntilClose => {
            loop {
                if ubuf.len() as u64 > max {
                    return Err("the body is larger than max_message and cannot be masked".into());
                }
                if !fill(up, ubuf).await? {
                    break;
                }
            }
            body = std::mem::take(ubuf);
        }
    }
    Ok(body)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn json_body<C: AsyncWriteRent, U: AsyncReadRent>(
    client: &mut C,
    up: &mut U,
    ubuf: &mut Vec<u8>,
    mut head: Vec<u8>,
    framing: Framing,
    mut masker: Masker,
    rules: &FieldRules,
    max: u64,
) -> (Relayed, Masker) {
    let mut body = match whole_body(up, ubuf, framing, max).await {
        Ok(b) => b,
        Err(e) => {
            // Nothing was sent yet: the client gets a clear error, never the body.
            let r = Reply::error(502, format!("the response could not be masked: {e}")).closing();
            let _ = client.write_all(r.bytes()).await;
            return (Err(e), masker);
        }
    };
    if let Err(e) = WideText::default().check(&body) {
        let r = Reply::error(502, e.clone()).closing();
        let _ = client.write_all(r.bytes()).await;
        return (Err(e), masker);
    }
    // A UTF-8 byte order mark is not part of the document.
    if body.starts_with(b"\xEF\xBB\xBF") {
        body.drain(..3);
    }
    if mask_json(&mut body, &mut masker, rules).is_err() {
        if !rules.is_empty() {
            // Field rules cannot be applied to what does not parse: refuse
            // rather than pass named fields in clear.
            let r = Reply::error(
                502,
                "the target sent JSON that Sluice cannot parse, so its field masking rules cannot be applied; it was not passed on",
            )
            .closing();
            let (res, _) = client.write_all(r.bytes()).await;
            let _ = res;
            return (Err("unparsable JSON with field rules".into()), masker);
        }
        // Declared JSON but not JSON: masked as text instead (never passed raw).
        let mut s = StreamMasker::new(masker.profile().clone());
        let mut out = Vec::with_capacity(body.len());
        s.feed(&body, &mut out);
        s.finish(&mut out);
        body = out;
        masker.counts = s.masker().counts.clone();
        // A lenient client (NaN, comments) still decodes escapes.
        mask_escaped_runs(&mut body, &mut masker);
    }
    let _ = write!(head, "content-length: {}\r\n\r\n", body.len());
    let n = (head.len() + body.len()) as u64;
    head.extend_from_slice(&body);
    let (res, _) = client.write_all(head).await;
    let relayed = match res {
        Ok(_) => Ok((n, masker.counts.pairs())),
        Err(e) => Err(e.to_string()),
    };
    (relayed, masker)
}

/// Any other text, through the streaming masker: same length, so a
/// Content-Length stays true; chunked bodies are re-chunked as masked bytes
/// are released; close-delimited stay so.
pub(super) async fn stream_body<C: AsyncWriteRent, U: AsyncReadRent>(
    client: &mut C,
    up: &mut U,
    ubuf: &mut Vec<u8>,
    mut head: Vec<u8>,
    framing: Framing,
    mut masker: StreamMasker,
) -> Relayed {
    match framing {
        Framing::Length(n) => {
            head.extend_from_slice(format!("content-length: {n}\r\n\r\n").as_bytes())
        }
        Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
        _ => head.extend_from_slice(b"\r\n"),
    }
    let chunked = framing == Framing::Chunked;
    masked_body(client, up, ubuf, head, framing, chunked, &mut masker).await
}

/// An event stream (SSE, JSON lines): each event is released, masked, as soon
/// as it is complete; the body is re-chunked (`chunked`) or sent until close.
#[allow(clippy::too_many_arguments)]
pub(super) async fn events_body<C: AsyncWriteRent, U: AsyncReadRent>(
    client: &mut C,
    up: &mut U,
    ubuf: &mut Vec<u8>,
    mut head: Vec<u8>,
    framing: Framing,
    chunked: bool,
    masker: EventMasker,
    rules: &FieldRules,
) -> Relayed {
    head.extend_from_slice(if chunked {
        b"transfer-encoding: chunked\r\n\r\n"
    } else {
        b"\r\n"
    });
    let mut events = EventBody { masker, rules };
    masked_body(client, up, ubuf, head, framing, chunked, &mut events).await
}

/// What a body streams through: bytes it releases are final (masked).
pub(super) trait BodyMasker {
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), String>;
    /// The body ended: release what is held.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String>;
    fn counts(&self) -> Vec<(&'static str, u64)>;
}

impl BodyMasker for StreamMasker {
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        StreamMasker::feed(self, data, out);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        StreamMasker::finish(self, out);
        Ok(())
    }

    fn counts(&self) -> Vec<(&'static str, u64)> {
        self.masker().counts.pairs()
    }
}

struct EventBody<'a> {
    masker: EventMasker,
    rules: &'a FieldRules,
}

impl BodyMasker for EventBody<'_> {
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        self.masker.feed(data, self.rules, out).map_err(cut)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        self.masker.finish(self.rules, out).map_err(cut)
    }

    fn counts(&self) -> Vec<(&'static str, u64)> {
        self.masker.masker().counts.pairs()
    }
}

fn cut(e: sluice_masking::events::EventError) -> String {
    format!("the event stream could not be masked: {e}")
}

/// Relays a body through `masker` as it arrives, after `head` (which already
/// holds the framing lines): re-chunked when `chunked`, else as released. A
/// body that cannot be masked is cut there, after what was released before
/// it: a chunked client sees no last chunk, and nothing after the cut is
/// passed.
async fn masked_body<C: AsyncWriteRent, U: AsyncReadRent, M: BodyMasker>(
    client: &mut C,
    up: &mut U,
    ubuf: &mut Vec<u8>,
    head: Vec<u8>,
    framing: Framing,
    chunked: bool,
    masker: &mut M,
) -> Relayed {
    let mut total = 0u64;
    let mut out = head;
    let mut released = Vec::with_capacity(16 * 1024);
    let mut decoder = ChunkedDecoder::new(u64::MAX);
    let mut wide = WideText::default();
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut feed = |masker: &mut M, data: &[u8], released: &mut Vec<u8>| {
        wide.check(data)?;
        masker.feed(data, released)
    };
    loop {
        let step = 'feed: {
            match framing {
                Framing::Length(_) => {
                    let n = (ubuf.len() as u64).min(left) as usize;
                    if let Err(e) = feed(masker, &ubuf[..n], &mut released) {
                        break 'feed Err(e);
                    }
                    ubuf.drain(..n);
                    left -= n as u64;
                    Ok(left == 0)
                }
                Framing::Chunked => loop {
                    let r = match decoder.decode(ubuf) {
                        Ok(r) => r,
                        Err(e) => break 'feed Err(e.to_string()),
                    };
                    if let Err(e) = feed(masker, &ubuf[r.data.clone()], &mut released) {
                        break 'feed Err(e);
                    }
                    ubuf.drain(..r.consumed);
                    if r.done || r.consumed == 0 {
                        break Ok(r.done);
                    }
                },
                _ => {
                    if let Err(e) = feed(masker, ubuf, &mut released) {
                        break 'feed Err(e);
                    }
                    ubuf.clear();
                    Ok(false)
                }
            }
        };
        let step = match step {
            Ok(true) => masker.finish(&mut released).map(|()| true),
            other => other,
        };
        let done = step == Ok(true);
        if chunked {
            rewrite::push_chunk(&mut out, &released);
        } else {
            out.extend_from_slice(&released);
        }
        released.clear();
        if done && chunked {
            out.extend_from_slice(rewrite::LAST_CHUNK);
        }
        if !out.is_empty() {
            total += out.len() as u64;
            let (res, back) = client.write_all(std::mem::take(&mut out)).await;
            res.map_err(|e| e.to_string())?;
            out = back;
            out.clear();
        }
        if step? {
            return Ok((total, masker.counts()));
        }
        if !fill(up, ubuf).await? {
            if framing != Framing::UntilClose {
                return Err("the upstream closed the connection mid-body".into());
            }
            let finished = masker.finish(&mut released);
            let (res, _) = client.write_all(released).await;
            res.map_err(|e| e.to_string())?;
            finished?;
            return Ok((total, masker.counts()));
        }
    }
}

/// The first bytes of a masked body. UTF-16/32 text (a byte order mark, or a
/// NUL among the first four bytes, as browsers and Python's `requests` guess
/// an encoding) spells every value with bytes between its characters, which
/// the detectors cannot read: refused, whatever the headers said.
#[derive(Default)]
pub(super) struct WideText {
    seen: usize,
    first: [u8; 4],
}

impl WideText {
    pub(super) fn check(&mut self, data: &[u8]) -> Result<(), String> {
        if self.seen == 4 {
            return Ok(());
        }
        for &b in data.iter().take(4 - self.seen) {
            self.first[self.seen] = b;
            self.seen += 1;
        }
        let f = &self.first[..self.seen];
        if f.contains(&0) || f.starts_with(&[0xFF, 0xFE]) || f.starts_with(&[0xFE, 0xFF]) {
            return Err(
                "the target sent UTF-16/32 text, which Sluice cannot mask; it was not passed on"
                    .into(),
            );
        }
        Ok(())
    }
}

pub(super) type Relayed = Result<(u64, Vec<(&'static str, u64)>), String>;

/// Reads from the upstream into `ubuf`; `Ok(false)` at EOF.
pub(super) async fn fill<U: AsyncReadRent>(up: &mut U, ubuf: &mut Vec<u8>) -> Result<bool, String> {
    match read_more_timeout(up, ubuf, STALL).await {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(e.to_string()),
    }
}
