//! Upstream → client: the server pump. Every message is attributed to the
//! client message it answers (the session machine), answers to messages the
//! gateway added are dropped, a placeholder's error becomes the gateway's own
//! refusal, values pass the masking hook in place, and each `ReadyForQuery`
//! closes the result record of its sync group.

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use sluice_protocols::postgres::backend::{self, field, tag, Backend};
use sluice_protocols::postgres::encoding::{self, Class};
use sluice_protocols::postgres::session::Route;
use sluice_protocols::postgres::{frame, Frame, Framed};

use super::masking::RowMasker;
use super::record::{read_only_status, results_may_leave};
use super::relay::{
    fatal_to_client, fill, take_passthrough, Plan, RelayState, MARKER, STREAM_THRESHOLD,
};
use super::{error_bytes, sqlstate, Context};
use crate::audit::event::CommandResult;
use crate::audit::Event as _;
use crate::metrics::ErrorKind;
use crate::notify::Slot;
use crate::warn;

/// Relays the server's messages to the client until either side goes.
///
/// It frames with the codec directly rather than reading one message at a
/// time: every whole message a read brought goes to the client in one write,
/// and a large row or `CopyData` (when nothing is masked) streams through
/// before it is whole.
pub(super) async fn upstream_to_client<R: AsyncReadRent, CW: AsyncWriteRent>(
    ctx: &Context<'_>,
    shared: &RelayState,
    mut upstream: R,
    client_w: &Slot<CW>,
    mut masker: Option<RowMasker>,
) {
    let max = ctx.config.gateway.max_message.max(1 << 30);
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut plan = Plan::new();
    let mut passthrough = 0usize;
    let mut result = GroupSummary::default();
    loop {
        if !fill(ctx, &mut upstream, &mut buf, ErrorKind::UpstreamIo).await {
            break;
        }
        let mut pos = take_passthrough(&mut passthrough, buf.len());
        result.bytes += pos as u64;
        let mut broken = None;
        while passthrough == 0 {
            // The header is enough to refuse a message or stream it through.
            let (f, whole) = match frame(&buf[pos..], max) {
                Ok(Framed::Complete(f)) => (f, true),
                Ok(Framed::Partial { header: Some(h) }) => (h, false),
                Ok(Framed::Partial { header: None }) => break,
                Err(e) => {
                    broken = Some((sqlstate::PROTOCOL_VIOLATION, e.to_string()));
                    break;
                }
            };
            let streamable = masker.is_none() && matches!(f.tag, tag::DATA_ROW | tag::COPY_DATA);
            // What must be held whole is bounded by `max_message`, like client
            // messages: a huge error text or a masked row cannot exhaust memory.
            if !streamable && f.len > ctx.config.gateway.max_message {
                broken = Some((
                    sqlstate::PROGRAM_LIMIT,
                    format!(
                        "upstream message of {} bytes exceeds max_message ({})",
                        f.len, ctx.config.gateway.max_message
                    ),
                ));
                break;
            }
            if !whole {
                let avail = buf.len() - pos;
                // With masking on, every value is inspected whole: nothing streams.
                if streamable && f.len > STREAM_THRESHOLD {
                    if let Err(e) = shared.session.borrow_mut().handle_backend(f.tag) {
                        broken = Some((sqlstate::PROTOCOL_VIOLATION, e.to_string()));
                        break;
                    }
                    passthrough = f.len - avail;
                    result.bytes += avail as u64;
                    if f.tag == tag::DATA_ROW {
                        result.rows += 1;
                    }
                    pos = buf.len();
                }
                break;
            }
            if let Err(e) = inspect_backend(
                ctx,
                shared,
                &mut buf,
                pos,
                f,
                &mut plan,
                &mut result,
                masker.as_mut(),
            ) {
                broken = Some((sqlstate::PROTOCOL_VIOLATION, e));
                break;
            }
            pos += f.len;
        }
        plan.finish(pos);
        // Results of commands whose records are not on disk yet wait for them.
        if let Err(e) = results_may_leave(ctx, shared).await {
            // Inside a row streaming through, an error message would be read
            // as its bytes: the session just ends.
            if !shared.mid_message.get() {
                fatal_to_client(
                    client_w,
                    sqlstate::AUDIT_UNAVAILABLE,
                    &format!("Sluice closed the session: {e}; the result was not passed on"),
                )
                .await;
            }
            break;
        }
        let Some(mut w) = client_w.take().await else {
            return;
        };
        let wrote = plan.write(&mut w, &mut buf).await;
        shared.mid_message.set(passthrough > 0);
        client_w.put(w);
        if wrote.is_err() {
            ctx.shard.metrics.error(ErrorKind::ClientIo);
            break;
        }
        shared.bytes_out.set(shared.bytes_out.get() + pos as u64);
        if let Some((code, e)) = broken {
            warn!(
                "upstream_protocol_error",
                target = ctx.target.name,
                error = e
            );
            ctx.shard.metrics.error(ErrorKind::UpstreamIo);
            // Tell the client why its session ends (the upstream's own bytes are
            // not passed on).
            fatal_to_client(client_w, code, &format!("Sluice closed the session: {e}")).await;
            break;
        }
        buf.drain(..pos);
    }
    if let Some(mut w) = client_w.close().await {
        let _ = w.shutdown().await;
    }
}

/// What came back for the current result group.
#[derive(Default)]
struct GroupSummary {
    rows: u64,
    bytes: u64,
    error: Option<String>,
    masked: Vec<(&'static str, u64)>,
}

/// The marker of a placeholder's syntax error, if this ErrorResponse body has one.
fn error_marker(body: &[u8]) -> Option<u64> {
    let Ok(Backend::ErrorResponse(fields)) = backend::parse(tag::ERROR_RESPONSE, body) else {
        return None;
    };
    let m = fields.get(field::MESSAGE)?;
    let i = memchr::memmem::find(m, MARKER.as_bytes())?;
    let hex = std::str::from_utf8(m.get(i + MARKER.len()..i + MARKER.len() + 16)?).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

/// Looks at one complete upstream message; may rewrite it in `plan` or mask it in
/// place.
#[allow(clippy::too_many_arguments)] // the pump's state, passed apart to keep borrows disjoint
fn inspect_backend(
    ctx: &Context<'_>,
    shared: &RelayState,
    buf: &mut [u8],
    pos: usize,
    f: Frame,
    plan: &mut Plan,
    result: &mut GroupSummary,
    masker: Option<&mut RowMasker>,
) -> Result<(), String> {
    // The message's body within `buf`.
    let body = pos + 5..pos + f.len;
    // Which message this answers; an answer to a message the gateway added
    // is read here (a RowDescription still sets the masking plan) and dropped.
    let route = shared
        .session
        .borrow_mut()
        .handle_backend(f.tag)
        .map_err(|e| e.to_string())?;
    if route == Route::Gateway {
        plan.replace(pos, pos + f.len, |_| {});
    }
    // The sync group the server is answering now.
    let answering = shared.session.borrow().answering();
    // Denial markers are matched before masking rewrites any text.
    // Only a marker the gateway itself planted counts (a client can put the
    // prefix in any error text to dodge masking otherwise).
    let denial = if f.tag == tag::ERROR_RESPONSE {
        error_marker(&buf[body.clone()]).and_then(|m| {
            let mut denials = shared.denials.borrow_mut();
            let i = denials.iter().position(|d| d.marker == m)?;
            denials.remove(i)
        })
    } else {
        None
    };
    // The encoding must stay one the classifier reads like the server.
    if f.tag == tag::PARAMETER_STATUS {
        if let Ok(Backend::ParameterStatus { name, value }) =
            backend::parse(f.tag, &buf[body.clone()])
        {
            if let Some(ro) = read_only_status(name, value) {
                shared.server_read_only.set(ro);
            }
            if name == b"client_encoding" && encoding::class(value) == Class::Unsafe {
                return Err(
                    "client_encoding changed to a multibyte encoding Sluice cannot read safely"
                        .into(),
                );
            }
        }
    }
    if let Some(m) = masker {
        if denial.is_none() {
            m.message(f.tag, &mut buf[body.clone()])?;
        }
        if f.tag == tag::READY_FOR_QUERY {
            result.masked = m.take_counts();
        }
        if f.tag == tag::PARAMETER_STATUS && !m.is_secrets_only() {
            if let Ok(Backend::ParameterStatus { name, value }) =
                backend::parse(f.tag, &buf[body.clone()])
            {
                if name == b"client_encoding" && !value.eq_ignore_ascii_case(b"UTF8") {
                    return Err("client_encoding changed away from UTF8 while masking is on".into());
                }
            }
        }
    }
    // What the server holds under each prepared statement name changes only
    // on its word (see `gates`).
    match f.tag {
        tag::PARSE_COMPLETE => shared.gates.borrow_mut().parse_complete(),
        tag::CLOSE_COMPLETE => shared.gates.borrow_mut().close_complete(),
        tag::ERROR_RESPONSE => shared.gates.borrow_mut().error(answering),
        _ => {}
    }
    match f.tag {
        tag::DATA_ROW => {
            result.rows += 1;
            result.bytes += f.len as u64;
        }
        tag::COPY_DATA => result.bytes += f.len as u64,
        tag::ERROR_RESPONSE => match denial {
            Some(d) => {
                plan.replace(pos, pos + f.len, |out| {
                    out.extend_from_slice(&error_bytes(d.code, &d.message, Some(&d.detail)));
                });
            }
            None if result.error.is_none() => {
                let msg = backend::parse(f.tag, &buf[body.clone()]).map_err(|e| e.to_string())?;
                if let Backend::ErrorResponse(fields) = msg {
                    let text =
                        |c| String::from_utf8_lossy(fields.get(c).unwrap_or_default()).into_owned();
                    result.error = Some(format!("{}: {}", text(field::CODE), text(field::MESSAGE)));
                }
            }
            None => {}
        },
        tag::READY_FOR_QUERY => {
            // Outside a transaction block the next statement starts a
            // transaction of the current default; inside one, the block
            // keeps the mode it began with, whatever the default says now.
            let status = buf[body.clone()].first().copied();
            shared
                .between_transactions
                .set(status == Some(backend::status::IDLE));
            let group = shared.session.borrow_mut().take_done();
            let done = group.as_ref().map_or(answering, |g| g.seq);
            shared.gates.borrow_mut().ready(done);
            shared.denials.borrow_mut().retain(|d| d.sync_seq > done);
            if let Some(g) = group {
                let now = shared.epoch.elapsed().as_micros() as u64;
                let elapsed = std::time::Duration::from_micros(now.saturating_sub(g.stamp));
                ctx.shard.metrics.command_done(elapsed);
                if !g.commands.is_empty() {
                    if let Some(audit) = ctx.shard.audit() {
                        let event = CommandResult {
                            session: &ctx.session,
                            target: &ctx.target.name,
                            subject: &ctx.identity.subject,
                            cmds: Some(&g.commands),
                            status: None,
                            rows: Some(result.rows),
                            bytes: result.bytes,
                            duration_us: elapsed.as_micros() as u64,
                            masked: &result.masked,
                            error: result.error.as_deref(),
                        };
                        audit.note(|out| event.encode(out));
                    }
                }
            }
            *result = GroupSummary::default();
        }
        tag::BACKEND_KEY_DATA | tag::AUTHENTICATION => {
            return Err(format!(
                "unexpected {:?} message after login",
                f.tag as char
            ))
        }
        _ => {}
    }
    Ok(())
}
