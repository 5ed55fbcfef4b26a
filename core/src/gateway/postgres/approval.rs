//! Holding a statement for approval inside a Postgres session.
//!
//! The relay stops at the held message (everything before it has been forwarded)
//! and calls [`resolve`]. A grant from an earlier approval of exactly this
//! statement lets it run at once. Otherwise a request is opened; in `wait` mode
//! the client is told with a `NoticeResponse` and the session task sleeps on the
//! request (other sessions of the shard keep running) until it is approved,
//! denied or expires, or the client hangs up (which cancels the request). In
//! `nowait` mode the statement is refused at once with the request's id.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};
use sluice_config::policy::ApprovalSpec;
use sluice_config::ApprovalMode;
use sluice_protocols::postgres::encode::{self, Report};
use sluice_protocols::sql::Kind;

use super::Context;
use crate::approvals::{Key, NewRequest, OpenError, Waited};
use crate::notify::Slot;

/// Longest statement text (all candidates together) that can be put to an
/// approver; a longer one is refused rather than shown cut.
pub const MAX_TEXT: usize = 64 * 1024;

/// A statement that needs a second person before it runs.
pub struct Hold {
    pub kind: Kind,
    pub spec: Arc<ApprovalSpec>,
    pub hash: [u8; 32],
    /// The statement, for approvers to read (every text the name may hold).
    pub text: String,
    /// Bound parameter values, for approvers to read.
    pub params: Vec<String>,
    pub database: String,
}

impl Hold {
    /// A statement bound to its exact text(s), the database, the `Bind`'s
    /// parameters (formats and values, as sent) and the approval rule in
    /// force: changing any of them needs a new approval.
    pub fn new(
        kind: Kind,
        spec: Arc<ApprovalSpec>,
        texts: &[Rc<[u8]>],
        bind: Option<&[u8]>,
        database: &str,
    ) -> Hold {
        let mut fields: Vec<(&[u8], &[u8])> = vec![(b"database", database.as_bytes())];
        fields.extend(texts.iter().map(|t| (&b"sql"[..], &t[..])));
        if let Some(rest) = bind {
            fields.push((b"bind", rest));
        }
        let hash = crate::approvals::key_hash(&fields, &spec);
        let text = texts
            .iter()
            .map(|t| String::from_utf8_lossy(t))
            .collect::<Vec<_>>()
            .join("\n-- or, if the server still holds the earlier text --\n");
        Hold {
            kind,
            spec,
            hash,
            text,
            params: bind.map(params).unwrap_or_default(),
            database: database.to_owned(),
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

/// The parameter values of a `Bind` body after its two names, for display: text
/// values as they are, binary ones in hex, NULL as `NULL`, each cut at 1 KiB.
fn params(rest: &[u8]) -> Vec<String> {
    let mut r = rest;
    let u16_ = |r: &mut &[u8]| -> Option<usize> {
        let (v, tail) = r.split_first_chunk::<2>()?;
        *r = tail;
        Some(u16::from_be_bytes(*v) as usize)
    };
    let Some(nformats) = u16_(&mut r) else {
        return Vec::new();
    };
    let mut formats = Vec::with_capacity(nformats);
    for _ in 0..nformats {
        formats.push(u16_(&mut r).unwrap_or(0));
    }
    let Some(n) = u16_(&mut r) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let Some((len, tail)) = r.split_first_chunk::<4>() else {
            break;
        };
        r = tail;
        let len = i32::from_be_bytes(*len);
        if len < 0 {
            out.push("NULL".to_owned());
            continue;
        }
        let Some((v, tail)) = r.split_at_checked(len as usize) else {
            break;
        };
        r = tail;
        let binary = match formats.len() {
            0 => false,
            1 => formats[0] == 1,
            _ => formats.get(i) == Some(&1),
        };
        let cut = &v[..v.len().min(1024)];
        let mut shown = if binary {
            let hex: String = cut.iter().map(|b| format!("{b:02x}")).collect();
            format!("\\x{hex}")
        } else {
            String::from_utf8_lossy(cut).into_owned()
        };
        if cut.len() < v.len() {
            shown.push_str(&format!("... ({} bytes)", v.len()));
        }
        out.push(shown);
    }
    out
}

/// How a held statement was settled.
pub enum Resolution {
    /// Approved (request `id`): forward it.
    Approved(u64),
    /// Refused: answer with this SQLSTATE and message.
    Refused {
        code: &'static str,
        message: String,
        detail: String,
    },
    /// The client hung up while waiting; the request was cancelled.
    Gone,
}

pub async fn resolve<W: AsyncWriteRent>(
    ctx: &Context<'_>,
    client_w: &Slot<W>,
    mid_message: &std::cell::Cell<bool>,
    hold: Hold,
) -> Resolution {
    let approvals = &ctx.shard.shared.approvals;
    let key = hold.key(ctx);
    let what = hold.what(ctx);
    if hold.text.len() > MAX_TEXT {
        return refused(format!(
            "{what} needs approval, and its text is longer than an approver can be shown ({MAX_TEXT} bytes)"
        ));
    }
    if let Some(r) = approvals.take_grant(&key) {
        return Resolution::Approved(r.id);
    }
    let wait = hold.spec.mode == ApprovalMode::Wait;
    let timeout = hold.spec.timeout;
    let opened = approvals.open(NewRequest {
        key,
        protocol: "postgres",
        summary: hold.kind.as_str().to_uppercase(),
        text: hold.text,
        params: hold.params,
        database: hold.database,
        session: ctx.session.clone(),
        approvers: hold.spec.approvers.clone(),
        quorum: hold.spec.quorum,
        ttl_ms: timeout.as_millis() as u64,
        grant_ttl_ms: hold.spec.grant_ttl.as_millis() as u64,
        reuse: !wait,
    });
    let request = match opened {
        Ok((r, _)) => r,
        Err(e @ (OpenError::TooMany(_) | OpenError::TooManyFor(..))) => {
            return refused(format!(
                "{what} needs approval, and no request could be opened: {e}"
            ))
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
            code: INSUFFICIENT_PRIVILEGE,
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
    let cancels = ctx.cancels.load(Ordering::Acquire);
    let waited = approvals
        .wait(id, ctx.client_fd, &ctx.shard.stopping, || {
            ctx.cancels.load(Ordering::Acquire) != cancels
        })
        .await;
    match waited {
        Waited::Approved => Resolution::Approved(id),
        Waited::Denied { by, reason } => Resolution::Refused {
            code: INSUFFICIENT_PRIVILEGE,
            message: format!("approval {id} for {what} was denied by {by}"),
            detail: reason.map(|x| format!("reason: {x}")).unwrap_or_default(),
        },
        Waited::Expired => refused(format!(
            "approval {id} for {what} timed out after {}s without a decision",
            timeout.as_secs()
        )),
        Waited::Closed(why) => refused(format!("approval {id} for {what} was {why}")),
        Waited::ShuttingDown => refused(format!(
            "approval {id} for {what} was cancelled: the gateway is shutting down"
        )),
        Waited::ClientGone => Resolution::Gone,
        // The client's CancelRequest (e.g. Ctrl-C in psql) ends the wait as
        // PostgreSQL ends a running statement.
        Waited::ClientCancelled => Resolution::Refused {
            code: QUERY_CANCELED,
            message: "canceling statement due to user request".into(),
            detail: format!("approval {id} for {what} was cancelled"),
        },
    }
}

const INSUFFICIENT_PRIVILEGE: &str = super::sqlstate::INSUFFICIENT_PRIVILEGE;
const QUERY_CANCELED: &str = "57014";

fn refused(message: String) -> Resolution {
    Resolution::Refused {
        code: INSUFFICIENT_PRIVILEGE,
        message,
        detail: String::new(),
    }
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
