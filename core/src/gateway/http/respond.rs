//! The response: its head (interim responses, framing, hop-by-hop headers,
//! masked header values) and the choice of how its body is relayed.

use super::bodies::{events_body, json_body, pass_body, stream_body};
use super::*;

/// How a response body is masked.
pub(super) enum Masking {
    None,
    /// JSON: buffered whole, masked by field path and detectors, re-framed.
    Json(Masker, Arc<FieldRules>),
    /// Server-Sent Events and JSON lines: masked event by event, re-framed.
    Events(EventMasker, Arc<FieldRules>),
    /// Any other text: the streaming masker (same length).
    Stream(StreamMasker),
}

/// What a response head is masked with: the profile, else the credential's
/// patterns alone (both compiled with the configuration).
fn head_profile<'p>(cx: &Context<'p>) -> Option<&'p Profile> {
    cx.plan.masking.as_ref().or(cx.plan.secrets.as_ref())
}

/// Whether this target's responses are read at all (masking, or a credential
/// to keep from flowing back).
pub(super) fn reads_responses(target: &sluice_config::Target) -> bool {
    target.masking.is_some()
        || target
            .credentials
            .as_ref()
            .is_some_and(|c| c.value.is_some())
}

pub(super) fn masking_for(cx: &Context<'_>, content_type: &[u8]) -> Masking {
    let plan = cx.plan;
    let media = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let ends = |suffix: &[u8]| {
        media.len() >= suffix.len()
            && media[media.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    // Media that cannot carry text are left to the credential's patterns.
    let binary = [&b"image/"[..], b"audio/", b"video/", b"font/"]
        .iter()
        .any(|p| media.len() >= p.len() && media[..p.len()].eq_ignore_ascii_case(p));
    match (&plan.masking, &plan.secrets, Events::of_media_type(media)) {
        (Some(profile), _, Some(kind)) => {
            let masker = EventMasker::new(
                kind,
                Masker::new(profile.clone()),
                cx.config.gateway.max_message,
            );
            Masking::Events(masker, plan.fields.clone())
        }
        (Some(profile), _, _) if ends(b"/json") || ends(b"+json") => {
            let masker = cx.cache.borrow_mut().json_masker.take();
            let mut masker = masker.unwrap_or_else(|| Masker::new(profile.clone()));
            masker.counts = Default::default();
            Masking::Json(masker, plan.fields.clone())
        }
        (Some(profile), _, _) if !binary => Masking::Stream(StreamMasker::new(profile.clone())),
        (_, Some(secrets), _) => Masking::Stream(StreamMasker::new(secrets.clone())),
        _ => Masking::None,
    }
}

/// Relays the response to `fwd`; masks it if the target says so.
pub(super) async fn respond<C: AsyncWriteRent, U: AsyncReadRent + AsyncWriteRent>(
    cx: &Context<'_>,
    client: &mut C,
    up: &mut U,
    fwd: &Forward,
    may_retry: bool,
) -> Relayed {
    // The session's response buffer, reused across requests.
    let mut ubuf = std::mem::take(&mut cx.cache.borrow_mut().ubuf);
    ubuf.clear();
    let outcome = respond_with(cx, client, up, fwd, &mut ubuf, may_retry).await;
    if ubuf.capacity() <= 256 * 1024 {
        cx.cache.borrow_mut().ubuf = ubuf;
    }
    outcome
}

pub(super) async fn respond_with<C: AsyncWriteRent, U: AsyncReadRent + AsyncWriteRent>(
    cx: &Context<'_>,
    client: &mut C,
    up: &mut U,
    fwd: &Forward,
    ubuf: &mut Vec<u8>,
    may_retry: bool,
) -> Relayed {
    loop {
        // The response head (interim 1xx responses are passed on first).
        let head = loop {
            let mut headers = [Header::EMPTY; MAX_HEADERS];
            match http::parse_response(ubuf, &mut headers, MAX_HEAD) {
                Ok(Status::Complete(r, n)) => break Ok((r.status, n)),
                Ok(Status::Partial) => {}
                Err(e) => break Err(e.to_string()),
            }
            match read_more_timeout(up, ubuf, cx.config.gateway.connect_timeout.max(STALL)).await {
                Ok(0) => break Err("the upstream closed the connection".into()),
                // A timeout is not a closed connection: never retried.
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Relayed::failed(format!("the upstream did not answer: {e}"))
                }
                Err(e) => break Err(e.to_string()),
                Ok(_) => {}
            }
        };
        let (status, head_len) = match head {
            Ok(h) => h,
            Err(_) if may_retry && ubuf.is_empty() => {
                return Relayed {
                    retry: true,
                    ..Relayed::failed("a reused connection closed".into())
                }
            }
            Err(e) => {
                cx.shard.metrics.error(ErrorKind::UpstreamIo);
                warn!(
                    "upstream_protocol_error",
                    target = cx.target.name,
                    error = e
                );
                let _ = reply(
                    client,
                    Reply::error(
                        502,
                        format!("target `{}` sent an invalid response", cx.target.name),
                    )
                    .closing(),
                )
                .await;
                return Relayed::failed(e);
            }
        };
        if (100..200).contains(&status) {
            if status == 101 {
                let _ = reply(
                    client,
                    Reply::error(
                        502,
                        "the upstream switched protocols, which Sluice does not allow",
                    )
                    .closing(),
                )
                .await;
                return Relayed::failed("upstream sent 101".into());
            }
            // 100 Continue was answered by the gateway already; others pass,
            // their header values masked like a final response's.
            if status != 100 {
                if let Some(profile) = head_profile(cx) {
                    // After `HTTP/1.1 103 `: the reason phrase and the fields.
                    let fields = head_len.min(13);
                    Masker::new(profile.clone()).mask_value(&mut ubuf[fields..head_len], None);
                }
            }
            if status != 100 && write_range(client, ubuf, 0..head_len).await.is_err() {
                return Relayed::failed("client write failed".into());
            }
            ubuf.drain(..head_len);
            continue;
        }
        let mut headers = [Header::EMPTY; MAX_HEADERS];
        let Ok(Status::Complete(resp, _)) = http::parse_response(ubuf, &mut headers, MAX_HEAD)
        else {
            return Relayed::failed("response head vanished".into());
        };
        let framing = match http::response_framing(&resp, &fwd.method) {
            Ok(f) => f,
            Err(e) => {
                let _ = reply(
                    client,
                    Reply::error(
                        502,
                        format!("target `{}` sent an invalid response: {e}", cx.target.name),
                    )
                    .closing(),
                )
                .await;
                return Relayed::failed(e.to_string());
            }
        };
        let upstream_close = resp.header("connection").is_some_and(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        }) || resp.version == 0;
        // Two Content-Types, or one listing several (`image/png, text/plain`):
        // clients differ on which counts (browsers take the last), so a
        // target whose responses are read refuses them before choosing how.
        let mut types = resp
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-type"));
        let ambiguous =
            types.next().is_some_and(|h| h.value.contains(&b',')) || types.next().is_some();
        if ambiguous && framing != Framing::None && reads_responses(cx.target) {
            warn!("masking_refused_content_type", target = cx.target.name);
            let _ = reply(
                client,
                Reply::error(502, "the target sent more than one Content-Type, which clients read differently; it was not passed on").closing(),
            )
            .await;
            return Relayed::failed("ambiguous content type with masking on".into());
        }
        let mut masking = masking_for(cx, resp.header("content-type").unwrap_or_default());
        if framing == Framing::None {
            masking = Masking::None;
        }
        // Every Content-Encoding field counts, and a text the detectors cannot
        // read byte by byte (UTF-16/32, EBCDIC: any charset that is not
        // ASCII-compatible) is as opaque as a compressed one. Two
        // Content-Types are refused: clients differ on which one counts.
        let encoded = resp.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("content-encoding")
                && h.value.split(|&b| b == b',').any(|c| {
                    !c.trim_ascii().is_empty() && !c.trim_ascii().eq_ignore_ascii_case(b"identity")
                })
        });
        let content_type = resp.header("content-type").unwrap_or_default();
        let unreadable = !http::readable_charset(content_type);
        if (encoded || unreadable) && !matches!(masking, Masking::None) {
            warn!("masking_refused_encoded_body", target = cx.target.name);
            let why = if encoded {
                "the target sent a compressed body, which Sluice cannot mask; it was not passed on"
            } else {
                "the target sent text in a charset Sluice cannot read (UTF-16/32, EBCDIC, ...), or named more than one; it was not passed on unmasked"
            };
            let _ = reply(client, Reply::error(502, why).closing()).await;
            return Relayed::failed("unreadable body with masking on".into());
        }
        // The head that goes to the client: the upstream's, minus hop-by-hop
        // and framing headers, plus our own framing.
        // Events change length: re-chunked for HTTP/1.1 clients, else sent
        // until close.
        let events_chunked = fwd.http11 && framing != Framing::UntilClose;
        let client_close = !fwd.keep_alive
            || framing == Framing::UntilClose
            || (matches!(masking, Masking::Events(..)) && !events_chunked);
        let mut head = Vec::with_capacity(head_len + 64);
        let framing_headers_replaced = !matches!(masking, Masking::None);
        // Header values are masked too (a `Location` or an `X-User` header can
        // carry what the body would not), whatever the body's type, and so is
        // the reason phrase (`401 bad key Bearer ...`).
        let cached = cx.cache.borrow_mut().head_masker.take();
        let mut head_masker = cached.or_else(|| Some(Masker::new(head_profile(cx)?.clone())));
        let _ = write!(head, "HTTP/1.1 {} ", resp.status);
        let at = head.len();
        head.extend_from_slice(resp.reason.as_bytes());
        if let Some(m) = head_masker.as_mut() {
            m.mask_value(&mut head[at..], None);
        }
        head.extend_from_slice(b"\r\n");
        for h in resp.headers {
            let framing_header = h.name.eq_ignore_ascii_case("content-length")
                || h.name.eq_ignore_ascii_case("transfer-encoding");
            if rewrite::RESPONSE_HOP_BY_HOP
                .iter()
                .any(|n| n.eq_ignore_ascii_case(h.name))
                || (framing_header && framing_headers_replaced)
            {
                continue;
            }
            head.extend_from_slice(h.name.as_bytes());
            head.extend_from_slice(b": ");
            let at = head.len();
            head.extend_from_slice(h.value);
            if let (Some(m), false) = (head_masker.as_mut(), framing_header) {
                m.mask_value(&mut head[at..], None);
            }
            head.extend_from_slice(b"\r\n");
        }
        let head_masked = match head_masker {
            Some(mut m) => {
                let counts = m.counts.pairs();
                m.counts = Default::default();
                cx.cache.borrow_mut().head_masker = Some(m);
                counts
            }
            None => Vec::new(),
        };
        if client_close {
            head.extend_from_slice(b"connection: close\r\n");
        }
        ubuf.drain(..head_len);
        let relayed = match masking {
            Masking::None => {
                head.extend_from_slice(b"\r\n");
                pass_body(client, up, ubuf, head, framing).await
            }
            Masking::Json(m, rules) => {
                let (relayed, masker) = json_body(
                    client,
                    up,
                    ubuf,
                    head,
                    framing,
                    m,
                    &rules,
                    cx.config.gateway.max_message as u64,
                )
                .await;
                cx.cache.borrow_mut().json_masker = Some(masker);
                relayed
            }
            Masking::Events(m, rules) => {
                events_body(client, up, ubuf, head, framing, events_chunked, m, &rules).await
            }
            Masking::Stream(m) => stream_body(client, up, ubuf, head, framing, m).await,
        };
        return match relayed {
            Ok((bytes, mut masked)) => Relayed {
                status,
                bytes,
                masked: {
                    for (name, n) in head_masked {
                        match masked.iter_mut().find(|(m, _)| *m == name) {
                            Some((_, total)) => *total += n,
                            None => masked.push((name, n)),
                        }
                    }
                    masked
                },
                error: None,
                upstream_reusable: !upstream_close
                    && framing != Framing::UntilClose
                    && ubuf.is_empty(),
                client_ok: !client_close,
                retry: false,
            },
            Err(e) => {
                debug!("response_relay_failed", target = cx.target.name, error = e);
                cx.shard.metrics.error(ErrorKind::UpstreamIo);
                Relayed {
                    status,
                    ..Relayed::failed(e)
                }
            }
        };
    }
}
