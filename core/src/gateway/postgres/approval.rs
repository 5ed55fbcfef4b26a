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
use sluice_protocols::postgres::encode::{self, Report};
use sluice_protocols::postgres::frontend::{Bind, Param};
use sluice_protocols::sql::Kind;

use super::Context;
use crate::approvals::{self, Key, Opened, Refusal, Settled};
use crate::notify::Slot;

/// Longest statement text (all candidates together) that can be put to an
/// approver; a longer one is refused rather than shown cut.
pub const MAX_TEXT: usize = 64 * 1024;

/// A statement that needs a second person before it runs.
pub struct HeldStatement {
    pub kind: Kind,
    pub spec: Arc<ApprovalSpec>,
    pub hash: [u8; 32],
    /// The statement, for approvers to read (every text the name may hold).
    pub text: String,
    /// Bound parameter values, for approvers to read.
    pub params: Vec<String>,
    pub database: String,
}

impl HeldStatement {
    /// A statement bound to its exact text(s), the database, the `Bind`'s
    /// parameters (formats and values, as sent) and the approval rule in
    /// force: changing any of them needs a new approval.
    pub fn new(
        kind: Kind,
        spec: Arc<ApprovalSpec>,
        texts: &[Rc<[u8]>],
        bind: Option<&Bind<'_>>,
        database: &str,
    ) -> HeldStatement {
        let mut fields: Vec<(&[u8], &[u8])> = vec![(b"database", database.as_bytes())];
        fields.extend(texts.iter().map(|t| (&b"sql"[..], &t[..])));
        if let Some(bind) = bind {
            fields.push((b"bind", bind.rest));
        }
        let hash = crate::approvals::key_hash(&fields, &spec);
        let text = texts
            .iter()
            .map(|t| String::from_utf8_lossy(t))
            .collect::<Vec<_>>()
            .join("\n-- or, if the server still holds the earlier text --\n");
        HeldStatement {
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
        hold_what(ctx, self.kind)
    }
}

/// A `Bind`'s parameter values, for display: text values as they are, binary
/// ones in hex, NULL as `NULL`, each cut at 1 KiB (what the codec can read of
/// a malformed `Bind`; the server refuses it anyway).
fn params(bind: &Bind<'_>) -> Vec<String> {
    bind.params()
        .map_while(Result::ok)
        .map(|p| {
            let (v, binary) = match p {
                Param::Null => return "NULL".to_owned(),
                Param::Text(v) => (v, false),
                Param::Binary(v) => (v, true),
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
            shown
        })
        .collect()
}

/// How a held statement was settled.
pub enum Resolution {
    /// Approved (request `id`): forward it.
    Approved {
        id: u64,
        /// The rule it was approved under: a reload that changed the rule
        /// while the statement waited means the approval does not count.
        spec: Arc<ApprovalSpec>,
    },
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
    hold: HeldStatement,
) -> Resolution {
    let what = hold.what(ctx);
    if hold.text.len() > MAX_TEXT {
        return refused(format!(
            "{what} needs approval, and its text is longer than an approver can be shown ({MAX_TEXT} bytes)"
        ));
    }
    let spec = hold.spec.clone();
    let held = approvals::Hold {
        key: hold.key(ctx),
        spec: hold.spec.clone(),
        protocol: "postgres",
        what,
        summary: hold.kind.as_str().to_uppercase(),
        text: hold.text,
        params: hold.params,
        database: hold.database,
        session: ctx.session.clone(),
        justification: ctx.justification.borrow().clone(),
        how_to_justify: "SET sluice.reason = '...' first (a statement of its own), or connect with options='-c sluice.reason=...'",
    };
    let pending = match ctx.shard.shared.approvals.hold(held, monoio::time::sleep).await {
        Opened::Granted(id) => return Resolution::Approved { id, spec },
        Opened::Failed(message) => return refused(message),
        Opened::Later {
            id,
            approvers,
            grant_ttl,
            ..
        } => {
            return Resolution::Refused {
                code: INSUFFICIENT_PRIVILEGE,
                message: format!(
                    "approval {id} requested for {}; run the same statement again once it is approved",
                    hold_what(ctx, hold.kind)
                ),
                detail: format!(
                    "an approver in {} runs: sluice approvals approve {id}; the approval can be used once, within {}s",
                    approvers.join(", "),
                    grant_ttl.as_secs()
                ),
            }
        }
        Opened::Waiting(pending) => pending,
    };
    let id = pending.id;
    notice(
        client_w,
        mid_message,
        &format!(
            "approval {id} requested for {}; waiting up to {}s",
            pending.what,
            pending.timeout.as_secs()
        ),
    )
    .await;
    let cancels = ctx.cancels.load(Ordering::Acquire);
    let waiting = approvals::Waiting {
        stopping: || ctx.shard.stopping.is_set(),
        cancelled: || ctx.cancels.load(Ordering::Acquire) != cancels,
        sleep: monoio::time::sleep,
    };
    let settled = pending.wait(ctx.client_fd, waiting).await;
    let message = settled.message();
    match settled {
        Settled::Approved(id) => Resolution::Approved { id, spec },
        Settled::Gone => Resolution::Gone,
        // The client's CancelRequest (e.g. Ctrl-C in psql) ends the wait as
        // PostgreSQL ends a running statement.
        Settled::Refused {
            why: Refusal::ClientCancelled,
            ..
        } => Resolution::Refused {
            code: QUERY_CANCELED,
            message: "canceling statement due to user request".into(),
            detail: message,
        },
        Settled::Refused {
            why: Refusal::Denied { reason, .. },
            ..
        } => Resolution::Refused {
            code: INSUFFICIENT_PRIVILEGE,
            message,
            detail: reason.map(|x| format!("reason: {x}")).unwrap_or_default(),
        },
        Settled::Refused { .. } => refused(message),
    }
}

fn hold_what(ctx: &Context<'_>, kind: Kind) -> String {
    format!("{} on {}", kind.as_str().to_uppercase(), ctx.target.name)
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

/// The setting a requester gives their reason in (`SET sluice.reason = '...'`
/// or the startup option `-c sluice.reason=...`).
pub const REASON_SETTING: &str = "sluice.reason";

/// A statement that is exactly `SET [SESSION] sluice.reason {= | TO} '...'`
/// (`Some(Some(reason))`), `... TO DEFAULT` or `RESET sluice.reason`
/// (`Some(None)`), with an optional `;`. Anything else, such as a `SET` among
/// other statements, is `None`: it runs as any statement, and the reason the
/// session holds stays.
pub fn reason_set(sql: &[u8]) -> Option<Option<String>> {
    // Every allowed statement passes here: most leave at their first letter.
    let first = sql.iter().find(|b| !b.is_ascii_whitespace())?;
    if !matches!(first.to_ascii_lowercase(), b's' | b'r' | b'd') {
        return None;
    }
    let mut rest = std::str::from_utf8(sql).ok()?.trim();
    rest = rest.strip_suffix(';').unwrap_or(rest).trim_end();
    let word = |s: &str, w: &str| -> Option<usize> {
        let head = s.get(..w.len())?;
        let after = s[w.len()..].chars().next();
        (head.eq_ignore_ascii_case(w)
            && after.is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != '.'))
        .then_some(w.len())
    };
    if let Some(n) = word(rest, "reset") {
        let name = rest[n..].trim();
        let all = name.eq_ignore_ascii_case("all");
        return (all || name.eq_ignore_ascii_case(REASON_SETTING)).then_some(None);
    }
    // `DISCARD ALL` resets every setting too.
    if let Some(n) = word(rest, "discard") {
        return rest[n..].trim().eq_ignore_ascii_case("all").then_some(None);
    }
    let n = word(rest, "set")?;
    rest = rest[n..].trim_start();
    if let Some(n) = word(rest, "session") {
        rest = rest[n..].trim_start();
    }
    let n = word(rest, REASON_SETTING)?;
    rest = rest[n..].trim_start();
    rest = match (rest.strip_prefix('='), word(rest, "to")) {
        (Some(r), _) => r,
        (None, Some(n)) => &rest[n..],
        _ => return None,
    }
    .trim_start();
    if word(rest, "default").is_some_and(|n| rest[n..].trim().is_empty()) {
        return Some(None);
    }
    // One standard string literal ('' for a quote), then nothing.
    let body = rest.strip_prefix('\'')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '\'' {
            value.push(c);
            continue;
        }
        match body[i + 1..].chars().next() {
            Some('\'') => {
                value.push('\'');
                chars.next();
            }
            _ => return body[i + 1..].trim().is_empty().then_some(Some(value)),
        }
    }
    None
}

#[cfg(test)]
mod reason_tests {
    use super::reason_set;

    #[test]
    fn only_a_statement_that_is_exactly_the_setting_is_read() {
        let r = |s: &str| reason_set(s.as_bytes());
        assert_eq!(
            r("SET sluice.reason = 'ticket 42'"),
            Some(Some("ticket 42".into()))
        );
        assert_eq!(
            r("  set SESSION Sluice.Reason TO 'it''s INC-7';  "),
            Some(Some("it's INC-7".into()))
        );
        assert_eq!(r("SET sluice.reason TO DEFAULT"), Some(None));
        assert_eq!(r("RESET sluice.reason;"), Some(None));
        assert_eq!(r("RESET ALL"), Some(None));
        assert_eq!(r("discard all;"), Some(None));
        for other in [
            "SET sluice.reason = 'a'; DELETE FROM t",
            "SET sluice.reason = 'a' -- x",
            "SET LOCAL sluice.reason = 'a'",
            "SET sluice.reasons = 'a'",
            "SET sluice.reason = unquoted",
            "SET sluice.reason = 'unterminated",
            "SET search_path = 'a'",
            "SELECT 'SET sluice.reason = ''a'''",
            "RESET role",
            "DISCARD PLANS",
        ] {
            assert_eq!(r(other), None, "{other}");
        }
    }
}
