//! The relay phase: two pumps, one per direction, running in one task.
//!
//! **Client → upstream.** Messages are framed in the read buffer and forwarded in
//! place, in one write per read. `Query`, `Parse` and `FunctionCall` are judged
//! first. A refused one is *replaced* by a placeholder the server rejects with a
//! syntax error naming a random marker (`sluice_denied_<hex>`): the real statement
//! never reaches the upstream, and the server itself produces the error, discards
//! until `Sync` and reports the right transaction state — so simple and extended
//! protocol, pipelines and transaction blocks all behave exactly as if the server
//! had refused the statement. A refused named `Parse` leaves no prepared statement
//! behind, so a later `Bind`/`Execute` of that name fails upstream, never runs.
//!
//! **Upstream → client.** An `ErrorResponse` carrying a pending marker is rewritten
//! into the gateway's own `42501` error with the rule's message; `DataRow`s pass the
//! masking hook in place. Large `DataRow`/`CopyData` messages stream through
//! without being buffered whole.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Splitable};
use sluice_protocols::postgres::backend::{self, Backend};
use sluice_protocols::postgres::encode;
use sluice_protocols::postgres::frontend::{self, Frontend};
use sluice_protocols::postgres::{frame, Frame};

use super::io::{read_more, write_range, Io};
use super::{error_bytes, sqlstate, Context};
use crate::metrics::ErrorKind;
use crate::policy::Verdict;
use crate::runtime::notify::Slot;
use crate::{info, warn};

/// Messages larger than this that need no inspection stream through.
const STREAM_THRESHOLD: usize = 256 * 1024;
const MARKER: &str = "sluice_denied_";

struct Denial {
    marker: u64,
    message: Arc<str>,
    detail: String,
    /// Resolved (matched or skipped) by this sync point's `ReadyForQuery`.
    sync_seq: u64,
}

/// State the two pumps share; no borrow is ever held across an `.await`.
struct Shared {
    denials: RefCell<VecDeque<Denial>>,
    syncs_sent: Cell<u64>,
    syncs_done: Cell<u64>,
    started: RefCell<VecDeque<Instant>>,
}

/// A write plan over the read buffer: ranges forwarded in place, plus replacement
/// bytes held in `scratch`.
enum Seg {
    Buf(usize, usize),
    Scratch(usize, usize),
}

struct Plan {
    segs: Vec<Seg>,
    scratch: Vec<u8>,
    /// Start of the read-buffer bytes not yet covered by a segment.
    from: usize,
}

impl Plan {
    fn new() -> Self {
        Plan {
            segs: Vec::new(),
            scratch: Vec::new(),
            from: 0,
        }
    }

    /// Replaces `buf[start..end]` with what `f` appends to the scratch buffer.
    fn replace(&mut self, start: usize, end: usize, f: impl FnOnce(&mut Vec<u8>)) {
        if start > self.from {
            self.segs.push(Seg::Buf(self.from, start));
        }
        let s = self.scratch.len();
        f(&mut self.scratch);
        self.segs.push(Seg::Scratch(s, self.scratch.len()));
        self.from = end;
    }

    fn finish(&mut self, end: usize) {
        if end > self.from {
            self.segs.push(Seg::Buf(self.from, end));
        }
        self.from = end;
    }

    async fn write<W: AsyncWriteRent>(
        &mut self,
        w: &mut W,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        for seg in self.segs.drain(..) {
            match seg {
                Seg::Buf(a, b) => write_range(w, buf, a..b).await?,
                Seg::Scratch(a, b) => write_range(w, &mut self.scratch, a..b).await?,
            }
        }
        self.scratch.clear();
        self.from = 0;
        Ok(())
    }
}

pub async fn run<C: Io, U: Io>(
    ctx: &Context<'_>,
    client: C,
    upstream: U,
    pending: Vec<u8>,
    _status: u8,
) {
    let (client_r, client_w) = client.into_split();
    let (upstream_r, upstream_w) = upstream.into_split();
    let client_w = Slot::new(client_w);
    let shared = Shared {
        denials: RefCell::new(VecDeque::new()),
        syncs_sent: Cell::new(0),
        syncs_done: Cell::new(0),
        started: RefCell::new(VecDeque::new()),
    };
    monoio::join!(
        client_to_upstream(ctx, &shared, client_r, upstream_w, &client_w, pending),
        upstream_to_client(ctx, &shared, upstream_r, &client_w),
    );
}

/// Sends a FATAL error to the client and closes its side for good.
async fn fatal_to_client<W: AsyncWriteRent>(client_w: &Slot<W>, code: &str, message: &str) {
    if let Some(mut w) = client_w.close().await {
        super::io::fatal(&mut w, code, message).await;
    }
}

async fn client_to_upstream<R: AsyncReadRent, W: AsyncWriteRent, CW: AsyncWriteRent>(
    ctx: &Context<'_>,
    shared: &Shared,
    mut client: R,
    mut upstream: W,
    client_w: &Slot<CW>,
    mut buf: Vec<u8>,
) {
    let max = ctx.config.gateway.max_message;
    let mut plan = Plan::new();
    let mut passthrough = 0usize;
    let mut terminate = false;
    loop {
        if buf.is_empty() || passthrough == 0 && incomplete(&buf, max) {
            match read_more(&mut client, &mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => {
                    ctx.shard.metrics.error(ErrorKind::ClientIo);
                    break;
                }
            }
        }
        let mut pos = 0;
        if passthrough > 0 {
            let n = passthrough.min(buf.len());
            passthrough -= n;
            pos = n;
        }
        while passthrough == 0 && !terminate {
            let f = match frame(&buf[pos..], max) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    warn!(
                        "client_protocol_error",
                        target = ctx.target.name,
                        subject = ctx.identity.subject,
                        error = e
                    );
                    ctx.shard.metrics.error(ErrorKind::ClientIo);
                    fatal_to_client(
                        client_w,
                        sqlstate::PROTOCOL_VIOLATION,
                        &format!("invalid message: {e}"),
                    )
                    .await;
                    let _ = upstream.shutdown().await;
                    linger(&mut client).await;
                    return;
                }
            };
            let avail = buf.len() - pos;
            if f.len > avail {
                if f.tag == b'd' && f.len > STREAM_THRESHOLD {
                    passthrough = f.len - avail;
                    pos = buf.len();
                }
                break;
            }
            if let Err(e) = judge_message(ctx, shared, &buf, pos, f, &mut plan) {
                warn!(
                    "client_protocol_error",
                    target = ctx.target.name,
                    subject = ctx.identity.subject,
                    error = e
                );
                ctx.shard.metrics.error(ErrorKind::ClientIo);
                fatal_to_client(
                    client_w,
                    sqlstate::PROTOCOL_VIOLATION,
                    &format!("invalid message: {e}"),
                )
                .await;
                let _ = upstream.shutdown().await;
                linger(&mut client).await;
                return;
            }
            if f.tag == b'X' {
                terminate = true;
            }
            pos += f.len;
        }
        plan.finish(pos);
        if plan.write(&mut upstream, &mut buf).await.is_err() {
            ctx.shard.metrics.error(ErrorKind::UpstreamIo);
            break;
        }
        buf.drain(..pos);
        if terminate {
            break;
        }
    }
    let _ = upstream.shutdown().await;
}

/// After a fatal error, reads and drops what the client is still sending (for up
/// to two seconds), so closing does not reset the connection before the client
/// has read the error.
async fn linger<R: AsyncReadRent>(client: &mut R) {
    let mut sink = Vec::with_capacity(64 * 1024);
    let drain = async {
        loop {
            sink.clear();
            match read_more(client, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = monoio::time::timeout(std::time::Duration::from_secs(2), drain).await;
}

/// True if `buf` does not start with a whole message (so more must be read).
fn incomplete(buf: &[u8], max: usize) -> bool {
    match frame(buf, max) {
        Ok(Some(f)) => f.len > buf.len() && !(f.tag == b'd' && f.len > STREAM_THRESHOLD),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Judges one complete client message at `buf[pos..pos + f.len]`; a refused
/// statement is replaced in `plan`.
fn judge_message(
    ctx: &Context<'_>,
    shared: &Shared,
    buf: &[u8],
    pos: usize,
    f: Frame,
    plan: &mut Plan,
) -> Result<(), sluice_protocols::postgres::Error> {
    let msg = frontend::parse(f.tag, &buf[pos + 5..pos + f.len])?;
    let (verdict, sync_point) = match msg {
        Frontend::Query(sql) => (judge(ctx, sql), true),
        Frontend::Parse { sql, .. } => (judge(ctx, sql), false),
        Frontend::FunctionCall { oid, .. } => (
            crate::policy::judge_function_call(ctx.shard, ctx.index, &ctx.identity, oid),
            true,
        ),
        Frontend::Sync => (Verdict::Allow, true),
        Frontend::Password(_) => {
            return Err(sluice_protocols::postgres::Error::Malformed(
                "unexpected password",
            ))
        }
        _ => (Verdict::Allow, false),
    };
    let seq = shared.syncs_sent.get() + 1;
    if let Verdict::Deny { message, detail } = verdict {
        let mut m = [0u8; 8];
        getrandom::fill(&mut m).expect("the OS random source is available");
        let marker = u64::from_ne_bytes(m);
        let placeholder = format!("{MARKER}{marker:016x}");
        plan.replace(pos, pos + f.len, |out| match msg {
            Frontend::Parse { name, .. } => encode::parse(out, name, placeholder.as_bytes(), &[]),
            _ => encode::query(out, placeholder.as_bytes()),
        });
        shared.denials.borrow_mut().push_back(Denial {
            marker,
            message,
            detail,
            sync_seq: seq,
        });
    }
    if sync_point {
        shared.syncs_sent.set(seq);
        shared.started.borrow_mut().push_back(Instant::now());
    }
    Ok(())
}

fn judge(ctx: &Context<'_>, sql: &[u8]) -> Verdict {
    let verdict = crate::policy::judge(ctx.shard, ctx.index, &ctx.identity, sql);
    if let Verdict::Deny { message, .. } = &verdict {
        info!(
            "statement_denied",
            target = ctx.target.name,
            subject = ctx.identity.subject,
            reason = message,
            sql = String::from_utf8_lossy(&sql[..sql.len().min(200)])
        );
    }
    verdict
}

async fn upstream_to_client<R: AsyncReadRent, CW: AsyncWriteRent>(
    ctx: &Context<'_>,
    shared: &Shared,
    mut upstream: R,
    client_w: &Slot<CW>,
) {
    let max = ctx.config.gateway.max_message.max(1 << 30);
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut plan = Plan::new();
    let mut passthrough = 0usize;
    loop {
        match read_more(&mut upstream, &mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => {
                ctx.shard.metrics.error(ErrorKind::UpstreamIo);
                break;
            }
        }
        let mut pos = 0;
        if passthrough > 0 {
            let n = passthrough.min(buf.len());
            passthrough -= n;
            pos = n;
        }
        let mut broken = None;
        while passthrough == 0 {
            let f = match frame(&buf[pos..], max) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e.to_string());
                    break;
                }
            };
            let avail = buf.len() - pos;
            if f.len > avail {
                if matches!(f.tag, b'D' | b'd') && f.len > STREAM_THRESHOLD {
                    passthrough = f.len - avail;
                    pos = buf.len();
                }
                break;
            }
            if let Err(e) = inspect_backend(ctx, shared, &mut buf, pos, f, &mut plan) {
                broken = Some(e);
                break;
            }
            pos += f.len;
        }
        plan.finish(pos);
        let Some(mut w) = client_w.take().await else {
            return;
        };
        let wrote = plan.write(&mut w, &mut buf).await;
        client_w.put(w);
        if wrote.is_err() {
            ctx.shard.metrics.error(ErrorKind::ClientIo);
            break;
        }
        if let Some(e) = broken {
            warn!(
                "upstream_protocol_error",
                target = ctx.target.name,
                error = e
            );
            ctx.shard.metrics.error(ErrorKind::UpstreamIo);
            break;
        }
        buf.drain(..pos);
    }
    if let Some(mut w) = client_w.close().await {
        let _ = w.shutdown().await;
    }
}

/// Looks at one complete upstream message; may rewrite it in `plan` or mask it in
/// place.
fn inspect_backend(
    ctx: &Context<'_>,
    shared: &Shared,
    buf: &mut [u8],
    pos: usize,
    f: Frame,
    plan: &mut Plan,
) -> Result<(), String> {
    match f.tag {
        b'E' => {
            let msg =
                backend::parse(f.tag, &buf[pos + 5..pos + f.len]).map_err(|e| e.to_string())?;
            let Backend::ErrorResponse(fields) = msg else {
                return Ok(());
            };
            let Some(marker) = fields
                .get(b'M')
                .and_then(|m| {
                    memchr::memmem::find(m, MARKER.as_bytes()).map(|i| &m[i + MARKER.len()..])
                })
                .and_then(|hex| std::str::from_utf8(hex.get(..16)?).ok())
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            else {
                return Ok(());
            };
            let denial = {
                let mut denials = shared.denials.borrow_mut();
                let i = denials.iter().position(|d| d.marker == marker);
                i.and_then(|i| denials.remove(i))
            };
            if let Some(d) = denial {
                plan.replace(pos, pos + f.len, |out| {
                    out.extend_from_slice(&error_bytes(
                        sqlstate::INSUFFICIENT_PRIVILEGE,
                        &d.message,
                        Some(&d.detail),
                    ));
                });
            }
        }
        b'Z' => {
            let done = shared.syncs_done.get() + 1;
            shared.syncs_done.set(done);
            shared.denials.borrow_mut().retain(|d| d.sync_seq > done);
            if let Some(t) = shared.started.borrow_mut().pop_front() {
                ctx.shard.metrics.command_done(t.elapsed());
            }
        }
        b'K' | b'R' => {
            return Err(format!(
                "unexpected {:?} message after login",
                f.tag as char
            ))
        }
        _ => {}
    }
    Ok(())
}
