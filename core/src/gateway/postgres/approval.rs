//! Holding a statement for approval inside a Postgres session.
//!
//! The relay stops at the held message (everything before it has been forwarded)
//! and calls [`resolve`]. A grant from an earlier approval of exactly this
//! statement lets it run at once. Otherwise a request is opened; in `wait` mode
//! the client is told with a `NoticeResponse` and the session task sleeps on the
//! request (other sessions of the shard keep running) until it is approved,
//! denied or expires, or the client hangs up (which cancels the request). In
//! `nowait` mode the statement is refused at once with the request's id.

use std::sync::Arc;
use std::time::Duration;

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};
use sha2::{Digest, Sha256};
use sluice_config::policy::ApprovalSpec;
use sluice_config::ApprovalMode;
use sluice_protocols::postgres::encode::{self, Report};
use sluice_protocols::sql::Kind;

use super::Context;
use crate::approvals::{Key, NewRequest, OpenError, State};
use crate::runtime::notify::Slot;

/// A statement that needs a second person before it runs.
pub struct Hold {
    pub kind: Kind,
    pub spec: Arc<ApprovalSpec>,
    pub hash: [u8; 32],
    /// The statement, for approvers to read.
    pub text: String,
    pub params: usize,
}

impl Hold {
    /// A simple-protocol statement (or function call): bound to its exact text.
    pub fn statement(kind: Kind, spec: Arc<ApprovalSpec>, text: &[u8]) -> Hold {
        Hold::bound(kind, spec, text, None)
    }

    /// A prepared statement being bound: bound to its text and the `Bind`'s
    /// parameters (formats and values, as sent).
    pub fn bound(kind: Kind, spec: Arc<ApprovalSpec>, text: &[u8], bind: Option<&[u8]>) -> Hold {
        let mut h = Sha256::new();
        h.update(b"sql\0");
        h.update((text.len() as u64).to_be_bytes());
        h.update(text);
        if let Some(rest) = bind {
            h.update(b"bind\0");
            h.update(rest);
        }
        Hold {
            kind,
            spec,
            hash: h.finalize().into(),
            text: display_text(text),
            params: bind.map_or(0, param_count),
        }
    }

    fn key(&self, ctx: &Context<'_>) -> Key {
        Key {
            requester: ctx.identity.subject.clone(),
            target: ctx.target.name.clone(),
            hash: self.hash,
        }
    }

    fn what(&self, ctx: &Context<'_>) -> String {
        format!(
            "{} on {}",
            self.kind.as_str().to_uppercase(),
            ctx.target.name
        )
    }
}

/// The number of parameters in a `Bind` body after its two names.
fn param_count(rest: &[u8]) -> usize {
    let u16_at = |i: usize| rest.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let Some(formats) = u16_at(0) else { return 0 };
    u16_at(2 + 2 * formats as usize).unwrap_or(0) as usize
}

/// Statement text for display: valid UTF-8, cut at 4 KiB (the hash covers all).
fn display_text(text: &[u8]) -> String {
    let mut cut = text.len().min(4096);
    while cut > 0 && cut < text.len() && (text[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    String::from_utf8_lossy(&text[..cut]).into_owned()
}

/// How a held statement was settled.
pub enum Resolution {
    /// Approved (request `id`): forward it.
    Approved(u64),
    /// Refused: answer with `42501` and this message.
    Refused { message: String, detail: String },
    /// The client hung up while waiting; the request was cancelled.
    Gone,
}

/// How often a waiting session checks whether its client is still there.
const CHECK_EVERY: Duration = Duration::from_millis(200);

pub async fn resolve<W: AsyncWriteRent>(
    ctx: &Context<'_>,
    client_w: &Slot<W>,
    mid_message: &std::cell::Cell<bool>,
    hold: Hold,
) -> Resolution {
    let approvals = &ctx.shard.shared.approvals;
    let key = hold.key(ctx);
    if let Some(r) = approvals.take_grant(&key) {
        return Resolution::Approved(r.id);
    }
    let wait = hold.spec.mode == ApprovalMode::Wait;
    let what = hold.what(ctx);
    let timeout = hold.spec.timeout;
    let opened = approvals.open(NewRequest {
        key,
        protocol: "postgres",
        summary: hold.kind.as_str().to_uppercase(),
        text: hold.text,
        params: hold.params,
        session: ctx.session.clone(),
        approvers: hold.spec.approvers.clone(),
        quorum: hold.spec.quorum,
        ttl_ms: timeout.as_millis() as u64,
        grant_ttl_ms: hold.spec.grant_ttl.as_millis() as u64,
        reuse: !wait,
    });
    let request = match opened {
        Ok((r, _)) => r,
        Err(e @ OpenError::TooMany(_)) => {
            return Resolution::Refused {
                message: format!("{what} needs approval, and no request could be opened: {e}"),
                detail: String::new(),
            }
        }
    };
    let id = request.id;
    let approvers = request.approvers.join(", ");
    crate::info!(
        "approval_requested",
        approval = id,
        target = ctx.target.name,
        subject = ctx.identity.subject,
        wait = wait
    );
    if !wait {
        return Resolution::Refused {
            message: format!(
                "approval {id} requested for {what}; run the same statement again once it is approved"
            ),
            detail: format!(
                "an approver in {approvers} runs: sluice approvals approve {id}; the approval can be used once, within {}s",
                hold.spec.grant_ttl.as_secs()
            ),
        };
    }
    notice(
        client_w,
        mid_message,
        &format!(
            "approval {id} requested for {what}; waiting up to {}s",
            timeout.as_secs()
        ),
    )
    .await;
    let mut guard = CancelOnDrop {
        ctx,
        id,
        armed: true,
    };
    let changed = approvals.watch(id);
    loop {
        let Some(r) = approvals.get(id) else {
            guard.armed = false;
            return refused(format!("approval {id} for {what} is no longer known"));
        };
        match r.state {
            State::Pending => {}
            State::Approved => {
                guard.armed = false;
                return match approvals.consume(id) {
                    Some(_) => Resolution::Approved(id),
                    None => refused(format!("approval {id} for {what} was already used")),
                };
            }
            State::Denied => {
                guard.armed = false;
                let by = r.denied_by.as_deref().unwrap_or("an approver");
                return Resolution::Refused {
                    message: format!("approval {id} for {what} was denied by {by}"),
                    detail: r.reason.map(|x| format!("reason: {x}")).unwrap_or_default(),
                };
            }
            State::Expired => {
                guard.armed = false;
                return refused(format!(
                    "approval {id} for {what} timed out after {}s without a decision",
                    timeout.as_secs()
                ));
            }
            State::Cancelled => {
                guard.armed = false;
                return refused(format!("approval {id} for {what} was cancelled"));
            }
        }
        if ctx.shard.stopping.is_set() {
            guard.armed = false;
            approvals.cancel(id);
            return refused(format!(
                "approval {id} for {what} was cancelled: the gateway is shutting down"
            ));
        }
        monoio::select! {
            _ = changed.recv_async() => {}
            _ = monoio::time::sleep(CHECK_EVERY) => {
                if hung_up(ctx.client_fd) {
                    guard.armed = false;
                    approvals.cancel(id);
                    crate::info!("approval_cancelled", approval = id, reason = "client disconnected");
                    return Resolution::Gone;
                }
            }
        }
    }
}

fn refused(message: String) -> Resolution {
    Resolution::Refused {
        message,
        detail: String::new(),
    }
}

/// Cancels the request if the waiting session is dropped (e.g. at the end of a
/// shutdown's drain), so no approval outlives the session that asked.
struct CancelOnDrop<'a, 'b> {
    ctx: &'a Context<'b>,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_, '_> {
    fn drop(&mut self) {
        if self.armed {
            self.ctx.shard.shared.approvals.cancel(self.id);
        }
    }
}

/// Has the peer closed its side (or reset) the connection? A waiting client
/// sends nothing, so a hang-up shows as `POLLRDHUP`/`POLLHUP` without reading.
fn hung_up(fd: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout; the fd is owned by this session.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// Sends a `NoticeResponse` between two upstream messages (never inside one
/// that is streaming through).
async fn notice<W: AsyncWriteRent>(
    client_w: &Slot<W>,
    mid_message: &std::cell::Cell<bool>,
    text: &str,
) {
    let mut out = Vec::with_capacity(64 + text.len());
    encode::notice_response(&mut out, &Report::notice(text));
    loop {
        let Some(mut w) = client_w.take().await else {
            return;
        };
        if !mid_message.get() {
            let _ = w.write_all(out).await;
            client_w.put(w);
            return;
        }
        client_w.put(w);
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}
