//! The audit records of each forwarded batch, and what waits for them: in
//! strict durability nothing is forwarded before its record is on disk, except
//! reads on a session the server itself keeps read-only, which go upstream at
//! once while their results wait (see [`results_may_leave`]). A batch the log
//! cannot take is refused whole, with `53100`.

use sluice_protocols::postgres::backend::{self, Backend};
use sluice_protocols::postgres::frontend::tag;
use sluice_protocols::postgres::{frame, Framed};
use sluice_protocols::sql::Statement;

use super::relay::{new_marker, substitute, Cmd, Denial, Plan, RelayState};
use super::{sqlstate, Context};
use crate::audit::event::{Command, Flags, Via};
use crate::audit::Event as _;
use crate::metrics::ErrorKind;
use crate::policy::Verdict;
use crate::warn;

/// Writes the batch's command records; in strict durability waits until they are
/// on disk. If the log cannot take them, every allowed command of the batch is
/// refused with `53100` instead of running unrecorded.
pub(super) async fn record_commands(
    ctx: &Context<'_>,
    shared: &RelayState,
    buf: &[u8],
    cmds: &mut [Cmd],
    plan: &mut Plan,
) {
    let Some(audit) = ctx.shard.audit() else {
        return;
    };
    let mut last = None;
    let mut failed = None;
    for c in cmds.iter() {
        let pushed = audit
            .push(|out| {
                let kinds = c
                    .statements
                    .iter()
                    .flat_map(|s| s.iter().map(|st| st.kind.as_str()));
                let opaque = c
                    .statements
                    .as_ref()
                    .is_some_and(|s| s.iter().any(|st| st.flags.opaque))
                    || c.tag == tag::FUNCTION_CALL;
                let writes = c
                    .statements
                    .as_ref()
                    .is_some_and(|s| s.iter().any(|st| st.flags.writes))
                    || c.tag == tag::FUNCTION_CALL;
                let unbounded = c
                    .statements
                    .as_ref()
                    .is_some_and(|s| s.iter().any(|st| st.flags.unbounded));
                let via = Via::Message(match c.tag {
                    tag::QUERY => "query",
                    tag::PARSE => "parse",
                    tag::BIND => "bind",
                    _ => "function_call",
                });
                let command = Command {
                    cmd: Some(c.id),
                    text: Some(&buf[c.text.clone()]),
                    flags: Some(Flags {
                        writes,
                        opaque,
                        unbounded,
                    }),
                    ..Command::new(
                        &ctx.session,
                        &ctx.target.name,
                        &ctx.identity.subject,
                        "postgres",
                        via,
                        "allow",
                    )
                };
                let command = match &c.verdict {
                    Verdict::Allow => Command {
                        approval: c.approval,
                        ..command
                    },
                    // A prepared statement: each execution waits for approval.
                    Verdict::Approve { rule, spec, .. } => Command {
                        decision: "approve",
                        rule: Some(*rule as u64 + 1),
                        approvers: Some(&spec.approvers[..]),
                        ..command
                    },
                    Verdict::Deny { message, rule, .. } => Command {
                        decision: "deny",
                        reason: Some(message),
                        rule: rule.map(|r| r as u64 + 1),
                        ..command
                    },
                };
                command.with_kinds(kinds).encode(out)
            })
            .await;
        match pushed {
            Ok(t) => last = Some(t),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let any_allowed = cmds
        .iter()
        .any(|c| !matches!(c.verdict, Verdict::Deny { .. }));
    if failed.is_none() && any_allowed {
        if let Some(t) = last {
            if audit.strict() && goes_ahead(shared, buf, cmds) {
                shared.unflushed.set(shared.unflushed.get().max(t));
            } else if let Err(e) = audit.wait_durable(t).await {
                failed = Some(e);
            }
        }
    }
    let Some(reason) = failed else { return };
    warn!(
        "audit_refused_commands",
        target = ctx.target.name,
        subject = ctx.identity.subject,
        reason = reason,
        commands = cmds.len()
    );
    ctx.shard.metrics.error(ErrorKind::Audit);
    // Rebuild the plan: every command of the batch becomes a placeholder.
    plan.reset_replacements();
    for c in cmds.iter_mut() {
        let marker = match c.marker {
            Some(m) => m,
            None => {
                let m = new_marker();
                shared.denials.borrow_mut().push_back(Denial {
                    marker: m,
                    code: sqlstate::AUDIT_UNAVAILABLE,
                    message: format!("command refused: {reason}").into(),
                    detail: "Sluice runs nothing it cannot record; try again when the audit log recovers".into(),
                    sync_seq: c.sync_seq,
                });
                c.marker = Some(m);
                m
            }
        };
        substitute(plan, buf, c, marker);
    }
}

/// Strict durability: whether this batch may go upstream before its
/// records are on disk, its results held until they are.
///
/// Only reads, and only where the server itself refuses writes (a standby,
/// a read-only role or database): the text alone cannot prove a statement
/// writes nothing (a view, an operator or a function shadowing a built-in
/// may). The server's word holds for the batch only if it is one
/// transaction, nothing sent before it is unanswered, and no transaction
/// block is open: a statement may turn the setting off for later
/// transactions (`set_config` inside a view), which the server reports
/// (ParameterStatus) before its ReadyForQuery, and a block begun read-write
/// stays so whatever the default says later.
fn goes_ahead(shared: &RelayState, buf: &[u8], cmds: &[Cmd]) -> bool {
    let reads_only = cmds.iter().all(|c| {
        matches!(c.verdict, Verdict::Deny { .. })
            || (matches!(c.tag, tag::QUERY | tag::PARSE | tag::BIND)
                && c.statements
                    .as_ref()
                    .is_some_and(|s| s.iter().all(Statement::read_only)))
    });
    if shared.read_write_asked.get() {
        return false;
    }
    if !reads_only {
        // Once asked, the shortcut is gone for the session: no more scanning.
        let asks_read_write = |t: &[u8]| {
            [&b"write"[..], b"read_only", b"read only"]
                .iter()
                .any(|w| t.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w)))
        };
        if cmds.iter().any(|c| asks_read_write(&buf[c.text.clone()])) {
            shared.read_write_asked.set(true);
        }
        return false;
    }
    let first = cmds.iter().map(|c| c.sync_seq).min();
    shared.server_read_only.get()
        && shared.between_transactions.get()
        && cmds.iter().all(|c| Some(c.sync_seq) == first)
        && first.is_some_and(|f| shared.session.borrow().answering() >= f)
}

/// Waits until the records of every command forwarded ahead of its record
/// (proven read-only, strict durability) are durable.
pub(super) async fn results_may_leave(
    ctx: &Context<'_>,
    shared: &RelayState,
) -> Result<(), crate::audit::Unavailable> {
    let t = shared.unflushed.get();
    if t == 0 {
        return Ok(());
    }
    let Some(audit) = ctx.shard.audit() else {
        return Ok(());
    };
    audit.wait_durable(t).await?;
    if shared.unflushed.get() == t {
        shared.unflushed.set(0);
    }
    Ok(())
}

/// What a `ParameterStatus` says of the server enforcing read-only: `None`
/// when it is about something else. (PostgreSQL 14 and later report both.)
pub fn read_only_status(name: &[u8], value: &[u8]) -> Option<bool> {
    matches!(name, b"default_transaction_read_only" | b"in_hot_standby")
        .then(|| value.eq_ignore_ascii_case(b"on"))
}

/// Whether the `ParameterStatus` messages of a login greeting say the server
/// enforces read-only.
pub fn greeting_read_only(greeting: &[u8]) -> bool {
    let mut read_only = false;
    let mut rest = greeting;
    while let Ok(Framed::Complete(f)) = frame(rest, usize::MAX) {
        if let Ok(Backend::ParameterStatus { name, value }) = backend::parse(f.tag, &rest[f.body()])
        {
            if let Some(ro) = read_only_status(name, value) {
                read_only |= ro;
            }
        }
        rest = &rest[f.len..];
    }
    read_only
}
