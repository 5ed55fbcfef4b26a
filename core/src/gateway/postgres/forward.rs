//! Client → upstream: the client pump. Each read's whole messages are judged
//! (statements classified and checked against the policy, strict column rules
//! and the gates of prepared statements awaiting approval), refused ones
//! replaced by placeholders, the batch's commands recorded (see
//! [`record`](super::record)) and the batch forwarded in one write. A message
//! that needs approval stops the batch until it is settled.

use std::rc::Rc;
use std::sync::Arc;

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use sluice_protocols::postgres::encode;
use sluice_protocols::postgres::frontend::{self, tag, Bind, Frontend};
use sluice_protocols::postgres::session::Account;
use sluice_protocols::postgres::{frame, Frame, Framed};
use sluice_protocols::sql::{Kind, Statement};

use super::approval::{self, HeldStatement, Resolution};
use super::record::record_commands;
use super::relay::{
    fatal_to_client, fill, new_marker, substitute, take_passthrough, Cmd, Denial, Plan, RelayState,
    STREAM_THRESHOLD,
};
use super::{sqlstate, Context};
use crate::error::Error;
use crate::metrics::ErrorKind;
use crate::net::linger;
use crate::notify::Slot;
use crate::policy::Verdict;
use crate::{info, warn};

/// What the client pump does after judging a message.
enum Step {
    Next,
    /// Stop before this message: it waits for approval.
    Hold(HeldStatement),
}

/// Reads client messages, judges and forwards them until the client or the
/// upstream goes, or the session is refused.
///
/// It frames with the codec directly rather than reading one message at a
/// time: every whole message a read brought is judged and the batch goes
/// upstream in one write, a large `CopyData` streams through before it is
/// whole, and a message held for approval stops the batch midway.
pub(super) async fn client_to_upstream<R: AsyncReadRent, W: AsyncWriteRent, CW: AsyncWriteRent>(
    ctx: &Context<'_>,
    shared: &RelayState,
    mut client: R,
    mut upstream: W,
    client_w: &Slot<CW>,
    mut buf: Vec<u8>,
) {
    let max = ctx.config.gateway.max_message;
    let mut plan = Plan::new();
    let mut cmds: Vec<Cmd> = Vec::new();
    let mut passthrough = 0usize;
    let mut terminate = false;
    let mut held: Option<HeldStatement> = None;
    // How the message that was held for approval was settled.
    let mut settled: Option<Resolution> = None;
    loop {
        if (buf.is_empty() || passthrough == 0 && incomplete(&buf, max))
            && !fill(ctx, &mut client, &mut buf, ErrorKind::ClientIo).await
        {
            break;
        }
        let mut pos = take_passthrough(&mut passthrough, buf.len());
        cmds.clear();
        while passthrough == 0 && !terminate {
            let f = match frame(&buf[pos..], max) {
                Ok(Framed::Complete(f)) => f,
                Ok(Framed::Partial { header: Some(h) }) if streams_through(h) => {
                    let copy = Frontend::CopyData(&[]);
                    let counted = shared.session.borrow_mut().handle_frontend(&copy);
                    if let Err(e) = counted {
                        let e = session_violation(e);
                        return protocol_violation(ctx, e, client_w, &mut upstream, &mut client)
                            .await;
                    }
                    passthrough = h.len - (buf.len() - pos);
                    pos = buf.len();
                    break;
                }
                Ok(Framed::Partial { .. }) => break,
                Err(e) => {
                    let e = Error::from(e);
                    return protocol_violation(ctx, e, client_w, &mut upstream, &mut client).await;
                }
            };
            let step = judge_message(
                ctx,
                shared,
                &buf,
                pos,
                f,
                &mut plan,
                &mut cmds,
                settled.take(),
            );
            match step {
                Ok(Step::Next) => {}
                Ok(Step::Hold(h)) => {
                    held = Some(h);
                    break;
                }
                Err(e) => {
                    return protocol_violation(ctx, e, client_w, &mut upstream, &mut client).await
                }
            }
            if f.tag == tag::TERMINATE {
                terminate = true;
            }
            pos += f.len;
        }
        if !cmds.is_empty() {
            record_commands(ctx, shared, &buf, &mut cmds, &mut plan).await;
        }
        plan.finish(pos);
        if plan.write(&mut upstream, &mut buf).await.is_err() {
            ctx.shard.metrics.error(ErrorKind::UpstreamIo);
            break;
        }
        shared.bytes_in.set(shared.bytes_in.get() + pos as u64);
        buf.drain(..pos);
        if terminate {
            break;
        }
        // Everything before the held message is upstream; it now waits (without
        // holding the shard) and is judged again with its resolution.
        if let Some(h) = held.take() {
            match approval::resolve(ctx, client_w, &shared.mid_message, h).await {
                Resolution::Gone => break,
                r => settled = Some(r),
            }
        }
    }
    let _ = upstream.shutdown().await;
}

/// True if `buf` does not start with a whole message (so more must be read)
/// nor with one that streams through.
fn incomplete(buf: &[u8], max: usize) -> bool {
    match frame(buf, max) {
        Ok(Framed::Complete(_)) | Err(_) => false,
        Ok(Framed::Partial { header: Some(h) }) => !streams_through(h),
        Ok(Framed::Partial { header: None }) => true,
    }
}

/// A large `CopyData` needs no inspection: it goes upstream as it arrives.
fn streams_through(h: Frame) -> bool {
    h.tag == tag::COPY_DATA && h.len > STREAM_THRESHOLD
}

/// A client message the gateway cannot take (malformed, oversized, or one the
/// session machine cannot follow, such as a message the server would swallow
/// during COPY): `08P01` to the client, the upstream closed (it never sees the
/// message), then the client drained and closed.
async fn protocol_violation<R: AsyncReadRent, W: AsyncWriteRent, CW: AsyncWriteRent>(
    ctx: &Context<'_>,
    e: Error,
    client_w: &Slot<CW>,
    upstream: &mut W,
    client: &mut R,
) {
    warn!(
        "client_protocol_error",
        target = ctx.target.name,
        subject = ctx.identity.subject,
        error = e.message
    );
    ctx.shard.failed(&e);
    fatal_to_client(client_w, e.sqlstate(), &e.message).await;
    let _ = upstream.shutdown().await;
    linger(client).await;
}

/// A held statement's client went away (the pump stops before judging
/// again; this only keeps a late arrival from running unjudged).
fn client_left() -> Error {
    Error::protocol_violation("the client left while its statement waited for approval")
}

/// The session machine refuses what the client sent: the session ends.
fn session_violation(e: sluice_protocols::postgres::session::Violation) -> Error {
    Error::protocol_violation(format!("Sluice closed the session: {e}"))
}

/// Judges one complete client message at `buf[pos..pos + f.len]`; a refused
/// statement is replaced in `plan`; commands are collected for the audit log.
/// A statement that needs approval is held (nothing recorded or changed yet)
/// unless `settled` says how its approval ended.
#[allow(clippy::too_many_arguments)] // the pump's state, passed apart to keep borrows disjoint
fn judge_message(
    ctx: &Context<'_>,
    shared: &RelayState,
    buf: &[u8],
    pos: usize,
    f: Frame,
    plan: &mut Plan,
    cmds: &mut Vec<Cmd>,
    mut settled: Option<Resolution>,
) -> Result<Step, Error> {
    let body = pos + 5..pos + f.len;
    let msg = frontend::parse(f.tag, &buf[body.clone()])?;
    let text_of = |s: &[u8]| {
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + s.len()
    };
    let seq = shared.session.borrow().next_sync();
    let mut approval = None;
    let mut deny_code = sqlstate::INSUFFICIENT_PRIVILEGE;
    let full =
        |_| sluice_protocols::postgres::Error::Malformed("too many prepared statements in flight");
    // Which messages end a sync group is the session machine's to say (a
    // Sync during COPY IN does not), below.
    let judged = match msg {
        Frontend::Query(sql) => Some((judge(ctx, shared, sql), text_of(sql))),
        Frontend::Parse {
            sql,
            name,
            param_types,
        } => {
            let mut judged = judge(ctx, shared, sql);
            // A setting whose value comes from a parameter can only be judged
            // with the value: the statement is prepared (parsing runs nothing)
            // and each `Bind` is judged with its values (see `bind_verdict`).
            // Only where every declared parameter type reads a value as the
            // text it is (unspecified, text, varchar): a `bpchar` would trim
            // `'role   '` to `role`, a `"char"` cut `'none'` to `'n'`.
            let as_text = param_types
                .chunks(4)
                .all(|oid| matches!(oid, [0, 0, 0, 0] | [0, 0, 0, 25] | [0, 0, 4, 19]));
            let bound = as_text
                && judged
                    .1
                    .iter()
                    .flat_map(|s| s.iter())
                    .any(|s| s.flags.bound_setting);
            if bound && matches!(judged.0, Verdict::Deny { .. }) {
                judged.0 = Verdict::Allow;
            }
            // Parsing runs nothing: a statement that needs approval is prepared,
            // and each execution of it (`Bind`) waits for its own approval. The
            // server's answer decides what the name holds (see `gates`).
            match &judged.0 {
                Verdict::Deny { .. } => {}
                Verdict::Allow if bound => shared
                    .gates
                    .borrow_mut()
                    .parse(name, Some(sql), seq)
                    .map_err(full)?,
                Verdict::Approve { .. } => shared
                    .gates
                    .borrow_mut()
                    .parse(name, Some(sql), seq)
                    .map_err(full)?,
                Verdict::Allow => shared
                    .gates
                    .borrow_mut()
                    .parse(name, None, seq)
                    .map_err(full)?,
            }
            Some((judged, text_of(sql)))
        }
        Frontend::FunctionCall { oid, .. } => {
            let st = [crate::policy::function_call(oid)];
            // A function can read any column; its result is no result column.
            let strict = if shared.strict.is_some() {
                Some(Verdict::Deny {
                    message: "fast-path function calls are not allowed under strict column rules"
                        .into(),
                    detail: "call the function in a SELECT".into(),
                    rule: None,
                })
            } else {
                None
            };
            let v = strict
                .or_else(|| super::encoding_refusal(ctx.target, &st))
                .unwrap_or_else(|| {
                    ctx.shard
                        .judge_statements(ctx.index, &ctx.identity, &ctx.resolved, &st)
                });
            Some(((v, None), body.clone()))
        }
        Frontend::Sync => None,
        // The portal's name is the session machine's to keep (see `forward`).
        Frontend::Bind(bind) => {
            let candidates = shared.gates.borrow().candidates(bind.statement, seq);
            let verdict = if candidates.is_empty() {
                None
            } else {
                // Judged again under the policy in force now.
                let verdict = match bind_verdict(ctx, shared, &candidates, &bind) {
                    Ok(Some((kind, spec))) => match settled.take() {
                        Some(Resolution::Approved { id, spec: approved }) if *approved == *spec => {
                            approval = Some(id);
                            Verdict::Allow
                        }
                        // Not yet held, or approved under a rule a reload has
                        // changed since: held (again) under the rule in force.
                        None | Some(Resolution::Approved { .. }) => {
                            return Ok(Step::Hold(HeldStatement::new(
                                kind,
                                spec,
                                &candidates,
                                Some(&bind),
                                &ctx.database,
                            )))
                        }
                        Some(Resolution::Refused {
                            code,
                            message,
                            detail,
                        }) => {
                            deny_code = code;
                            Verdict::Deny {
                                message: message.into(),
                                detail,
                                rule: None,
                            }
                        }
                        Some(Resolution::Gone) => return Err(client_left()),
                    },
                    Ok(None) => Verdict::Allow,
                    Err(deny) => deny,
                };
                Some(verdict)
            };
            // A Bind of a gated statement is a command of its own (recorded,
            // refused by placeholder like any other).
            verdict.map(|v| ((v, None), text_of(bind.statement)))
        }
        Frontend::Close { kind, name } => {
            if kind == frontend::kind::STATEMENT {
                shared.gates.borrow_mut().close(name, seq).map_err(full)?;
            }
            None
        }
        Frontend::Password(_) => {
            return Err(sluice_protocols::postgres::Error::Malformed("unexpected password").into())
        }
        _ => None,
    };
    let mut account = Account::None;
    if let Some(((mut verdict, statements), text)) = judged {
        // A statement (not a Parse) that needs approval runs only once settled.
        if let (Verdict::Approve { rule, spec, kind }, true) = (&verdict, f.tag != tag::PARSE) {
            match settled.take() {
                Some(Resolution::Approved { id, spec: approved }) if *approved == **spec => {
                    approval = Some(id);
                    verdict = Verdict::Allow;
                }
                // Not yet held, or approved under a rule a reload has changed
                // since: held (again) under the rule in force.
                None | Some(Resolution::Approved { .. }) => {
                    return Ok(Step::Hold(HeldStatement::new(
                        *kind,
                        spec.clone(),
                        &[buf[text.clone()].into()],
                        None,
                        &ctx.database,
                    )))
                }
                Some(Resolution::Refused {
                    code,
                    message,
                    detail,
                }) => {
                    deny_code = code;
                    verdict = Verdict::Deny {
                        message: message.into(),
                        detail,
                        rule: Some(*rule),
                    };
                }
                Some(Resolution::Gone) => return Err(client_left()),
            }
        }
        let id = shared.next_id.get();
        shared.next_id.set(id + 1);
        shared.commands.set(shared.commands.get() + 1);
        let mut cmd = Cmd {
            id,
            pos,
            len: f.len,
            tag: f.tag,
            text,
            verdict,
            statements,
            marker: None,
            sync_seq: seq,
            approval,
        };
        if let Verdict::Deny {
            message, detail, ..
        } = &cmd.verdict
        {
            let marker = new_marker();
            substitute(plan, buf, &cmd, marker);
            shared.denials.borrow_mut().push_back(Denial {
                marker,
                code: deny_code,
                message: message.clone(),
                detail: detail.clone(),
                sync_seq: seq,
            });
            cmd.marker = Some(marker);
            account = Account::Refused;
        } else {
            account = Account::Command(id);
        }
        cmds.push(cmd);
    }
    // The message goes upstream now: the session machine counts what the
    // server will owe for it, and which command its results belong to.
    let stamp = shared.epoch.elapsed().as_micros() as u64;
    let fwd = shared
        .session
        .borrow_mut()
        .forward(&msg, account, stamp)
        .map_err(session_violation)?;
    if let (true, Frontend::Execute { portal, .. }) = (fwd.describe_portal, &msg) {
        plan.replace(pos, pos, |out| {
            encode::describe(out, frontend::kind::PORTAL, portal)
        });
    }
    Ok(Step::Next)
}

/// How a `Bind` of a gated name is treated: `Ok(Some)` held for approval under
/// that spec, `Ok(None)` allowed (the policy changed), `Err` refused.
#[allow(clippy::type_complexity)]
fn bind_verdict(
    ctx: &Context<'_>,
    shared: &RelayState,
    candidates: &[Rc<[u8]>],
    bind: &Bind<'_>,
) -> Result<Option<(Kind, Arc<sluice_config::policy::ApprovalSpec>)>, Verdict> {
    let mut hold: Option<(Kind, Arc<sluice_config::policy::ApprovalSpec>)> = None;
    // Each candidate is judged with this Bind's values written in, so a
    // setting that takes its value from a parameter is judged by that value.
    let params = bind.params().collect::<Result<Vec<_>, _>>();
    let params = params.map_err(|e| Verdict::Deny {
        message: format!("Sluice cannot read this Bind: {e}").into(),
        detail: String::new(),
        rule: None,
    })?;
    for text in candidates {
        let bound = sluice_protocols::sql::with_params(text, &params);
        let text = bound.as_deref().unwrap_or(text);
        match judge(ctx, shared, text).0 {
            deny @ Verdict::Deny { .. } => return Err(deny),
            Verdict::Approve { kind, spec, .. } => match &hold {
                Some((_, held)) if **held != *spec => {
                    return Err(Verdict::Deny {
                        message: "the statements this name may hold need different approvers"
                            .into(),
                        detail: "close the prepared statement and prepare it again".into(),
                        rule: None,
                    })
                }
                Some(_) => {}
                None => hold = Some((kind, spec)),
            },
            Verdict::Allow => {}
        }
    }
    Ok(hold)
}

fn judge(ctx: &Context<'_>, shared: &RelayState, sql: &[u8]) -> (Verdict, Option<Rc<[Statement]>>) {
    let (mut verdict, mut statements) =
        ctx.shard
            .judge(ctx.index, &ctx.identity, &ctx.resolved, sql);
    // A function defined in the database runs its body out of sight: calling
    // one is opaque code, unless the guardrails name it.
    let user_functions = shared.catalog.as_deref().map(|c| &c.user_functions[..]);
    if let Some(called) = user_functions.and_then(|f| sluice_protocols::sql::calls(sql, f)) {
        if statements.iter().any(|s| !s.flags.opaque) {
            statements = statements
                .iter()
                .map(|s| {
                    let mut s = *s;
                    s.flags.opaque = true;
                    s
                })
                .collect();
            verdict =
                ctx.shard
                    .judge_statements(ctx.index, &ctx.identity, &ctx.resolved, &statements);
            if let Verdict::Deny { detail, .. } = &mut verdict {
                let why = format!(
                    "`{called}` is a function defined in the database: its body runs out of Sluice's sight (the guardrails' `functions` may name it)"
                );
                *detail = if detail.is_empty() {
                    why
                } else {
                    format!("{detail}; {why}")
                };
            }
        }
    }
    // An approval runs a statement once. SQL `PREPARE` would keep an approved
    // statement around to run again, and SQL `EXECUTE` could run a prepared
    // statement that awaits approval: both are refused in those cases.
    if matches!(verdict, Verdict::Approve { .. }) && statements.iter().any(|s| s.flags.prepares) {
        verdict = Verdict::Deny {
            message: "a statement that needs approval cannot be prepared with SQL PREPARE".into(),
            detail: "send the statement itself (or prepare it with the protocol's Parse): each execution is approved".into(),
            rule: None,
        };
    }
    if !matches!(verdict, Verdict::Deny { .. })
        && shared.gates.borrow().any()
        && statements.iter().any(|s| s.kind == Kind::Execute)
    {
        verdict = Verdict::Deny {
            message: "SQL EXECUTE is not allowed while prepared statements await approval".into(),
            detail: "execute them with Bind/Execute so each run is approved".into(),
            rule: None,
        };
    }
    // The classifier reads the session's bytes as the server will only while the
    // encoding stays one it reads exactly (see `encoding_refusal`).
    if !matches!(verdict, Verdict::Deny { .. }) {
        if let Some(deny) = super::encoding_refusal(ctx.target, &statements) {
            verdict = deny;
        }
    }
    // A protected column leaves only as a plain result column, which the
    // masker sees (see `sql::columns`); code Sluice cannot see could read
    // any column, whatever the guardrails say of it.
    if let (false, Some(p)) = (matches!(verdict, Verdict::Deny { .. }), &shared.strict) {
        if statements.iter().any(|s| s.flags.opaque) {
            verdict = Verdict::Deny {
                message: "code Sluice cannot see is not allowed under strict column rules".into(),
                detail: "DO, CALL, EXECUTE, functions defined in the database and functions that run SQL text could read a protected column".into(),
                rule: None,
            };
        } else if let Err(refusal) = sluice_protocols::sql::columns::check(sql, p) {
            verdict = Verdict::Deny {
                message: refusal.to_string().into(),
                detail: "a value computed from a protected column would reach the client unmasked; select the column itself (it comes back masked)".into(),
                rule: None,
            };
        }
    }
    // The requester's reason for what may be held later (the statement
    // itself runs as any `SET` of a setting the server keeps as text).
    if matches!(verdict, Verdict::Allow) {
        if let Some(reason) = super::approval::reason_set(sql) {
            *ctx.justification.borrow_mut() = reason;
        }
    }
    // A Parse whose setting waits for its Bind's values is not refused here
    // (see the Parse arm): only the Bind's judgement is logged.
    let waits_for_bind = statements.iter().any(|s| s.flags.bound_setting);
    if let (Verdict::Deny { message, .. }, false) = (&verdict, waits_for_bind) {
        info!(
            "statement_denied",
            target = ctx.target.name,
            subject = ctx.identity.subject,
            reason = message,
            sql = String::from_utf8_lossy(&sql[..sql.len().min(200)])
        );
    }
    (verdict, Some(statements))
}
