//! The relay phase: two pumps, one per direction, running in one task.
//!
//! **Client → upstream.** Messages are framed in the read buffer and forwarded in
//! place, in one write per read. `Query`, `Parse` and `FunctionCall` are judged
//! first and recorded in the audit log (in strict durability the batch waits for
//! the records to be on disk, except reads on a session the server keeps
//! read-only, whose results wait instead). A refused one is *replaced* by a placeholder the
//! server rejects with a syntax error naming a random marker
//! (`sluice_denied_<hex>`): the real statement never reaches the upstream, and the
//! server itself produces the error, discards until `Sync` and reports the right
//! transaction state — so simple and extended protocol, pipelines and transaction
//! blocks all behave exactly as if the server had refused the statement. A
//! refused named `Parse` leaves no prepared statement behind, so a later
//! `Bind`/`Execute` of that name fails upstream, never runs. If the audit log
//! cannot take the records, the batch's commands are refused the same way with
//! SQLSTATE `53100`: nothing runs unrecorded.
//!
//! **Upstream → client.** An `ErrorResponse` carrying a pending marker is rewritten
//! into the gateway's own error with the rule's message; `DataRow`s pass the
//! masking hook in place; each `ReadyForQuery` closes a result record (rows,
//! bytes, error, time). Large `DataRow`/`CopyData` messages stream through
//! without being buffered whole.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Splitable};
use sluice_protocols::postgres::backend::{self, Backend};
use sluice_protocols::postgres::encode;
use sluice_protocols::postgres::frontend::{self, Frontend};
use sluice_protocols::postgres::session::{Account, Route, Session};
use sluice_protocols::postgres::{frame, Frame};
use sluice_protocols::sql::columns::Protected;
use sluice_protocols::sql::{Kind, Statement};

use super::approval::{self, Hold, Resolution};
use super::gates::Gates;
use super::io::{linger, read_more, write_range, Io};
use super::{error_bytes, sqlstate, Context};
use crate::audit::{now_ms, Rec};
use crate::metrics::ErrorKind;
use crate::notify::Slot;
use crate::policy::Verdict;
use crate::shard::catalogs::Catalog;
use crate::{info, warn};

/// Messages larger than this that need no inspection stream through.
const STREAM_THRESHOLD: usize = 256 * 1024;
const MARKER: &str = "sluice_denied_";

struct Denial {
    marker: u64,
    code: &'static str,
    message: Arc<str>,
    detail: String,
    /// Resolved (matched or skipped) by this sync point's `ReadyForQuery`.
    sync_seq: u64,
}

/// State the two pumps share; no borrow is ever held across an `.await`.
struct Shared {
    /// What the server owes, so every answer is attributed to its message.
    session: RefCell<Session>,
    /// Prepared statements whose execution needs approval, as the server sees them.
    gates: RefCell<Gates>,
    /// The last write to the client ended inside a message streaming through
    /// (nothing else may be written to the client until it is finished).
    mid_message: Cell<bool>,
    denials: RefCell<VecDeque<Denial>>,
    /// Sync groups are stamped with microseconds since this instant.
    epoch: Instant,
    next_id: Cell<u64>,
    /// What strict column rules protect; `None`: no column rules, or not strict.
    strict: Option<Rc<Protected>>,
    /// What the rules know of the upstream's catalog.
    catalog: Option<Rc<Catalog>>,
    pub commands: Cell<u64>,
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    /// In strict durability, the audit ticket of read-only commands that
    /// went upstream before their records were on disk: nothing more reaches
    /// the client until the ticket is durable (0: nothing pending).
    unflushed: Cell<u64>,
    /// The server enforces read-only for this session, as it reports
    /// (`default_transaction_read_only` or `in_hot_standby` on).
    server_read_only: Cell<bool>,
    /// The session asked for a read-write transaction or changed the
    /// read-only setting some way the server may not report: no more reads
    /// go upstream ahead of their records.
    read_write_asked: Cell<bool>,
}

/// One judged command of the current read batch.
struct Cmd {
    id: u64,
    pos: usize,
    len: usize,
    tag: u8,
    /// The SQL text (or function call) within the read buffer.
    text: std::ops::Range<usize>,
    verdict: Verdict,
    statements: Option<Rc<[Statement]>>,
    /// For a refused command, the marker of its placeholder.
    marker: Option<u64>,
    sync_seq: u64,
    /// The approval this command runs under.
    approval: Option<u64>,
}

/// What the client pump does after judging a message.
enum Step {
    Next,
    /// Stop before this message: it waits for approval.
    Hold(Hold),
}

/// A write plan over the read buffer: the buffer forwarded in place, with some
/// ranges replaced (or bytes inserted, or messages dropped) by bytes held in
/// `scratch`.
struct Plan {
    /// `(start, end, bytes)`: `buf[start..end]` becomes `scratch[bytes]`; an
    /// empty range inserts.
    edits: Vec<(usize, usize, std::ops::Range<usize>)>,
    scratch: Vec<u8>,
    /// End of the read-buffer bytes to write.
    end: usize,
    /// Reused: an edited batch assembled for one write.
    out: Vec<u8>,
}

impl Plan {
    fn new() -> Self {
        Plan {
            edits: Vec::new(),
            scratch: Vec::new(),
            end: 0,
            out: Vec::new(),
        }
    }

    /// Forgets the replacements, keeping insertions (the messages the gateway
    /// adds, such as a `Describe` before an `Execute`, which the session
    /// machine already counts on).
    fn reset_replacements(&mut self) {
        self.edits.retain(|(a, b, _)| a == b);
    }

    /// Replaces `buf[start..end]` with what `f` appends to the scratch buffer.
    fn replace(&mut self, start: usize, end: usize, f: impl FnOnce(&mut Vec<u8>)) {
        let s = self.scratch.len();
        f(&mut self.scratch);
        self.edits.push((start, end, s..self.scratch.len()));
    }

    fn finish(&mut self, end: usize) {
        self.end = end;
    }

    /// Writes the plan: in place when nothing is edited, else assembled in one
    /// buffer so an edited batch is still one write.
    async fn write<W: AsyncWriteRent>(
        &mut self,
        w: &mut W,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let end = std::mem::take(&mut self.end);
        if self.edits.is_empty() {
            return write_range(w, buf, 0..end).await;
        }
        // In buffer order; an insertion before a replacement at the same place.
        self.edits.sort_by_key(|(a, b, _)| (*a, *b));
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let mut from = 0;
        for (a, b, bytes) in self.edits.drain(..) {
            if a > from {
                out.extend_from_slice(&buf[from..a]);
            }
            out.extend_from_slice(&self.scratch[bytes]);
            from = from.max(b);
        }
        out.extend_from_slice(&buf[from..end]);
        self.scratch.clear();
        let n = out.len();
        let result = write_range(w, &mut out, 0..n).await;
        self.out = out;
        result
    }
}

/// Per-session counters for the session's end record.
pub struct Totals {
    pub commands: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

pub async fn run<C: Io, U: Io>(
    ctx: &Context<'_>,
    client: C,
    upstream: U,
    pending: Vec<u8>,
    catalog: Option<std::rc::Rc<Catalog>>,
    server_read_only: bool,
) -> Totals {
    let (client_r, client_w) = client.into_split();
    let (upstream_r, upstream_w) = upstream.into_split();
    let client_w = Slot::new(client_w);
    let strict = strict_columns(ctx, catalog.as_ref());
    // The password Sluice logs in with never reaches the client, should the
    // server ever echo it (an error, `pg_stat_activity` of an `ALTER ROLE`):
    // every value is read for it, on any target. Both profiles were compiled
    // with the configuration.
    let masker = match (&ctx.plan.masking, &ctx.plan.secrets) {
        (Some(p), _) => Some(
            super::masking::RowMasker::new(p.clone(), catalog.clone()).strict(strict.is_some()),
        ),
        (None, Some(secrets)) => Some(super::masking::RowMasker::secrets_only(secrets.clone())),
        (None, None) => None,
    };
    // Column rules need every result's exact columns and formats: each
    // Execute then gets a Describe of its portal (see `session`).
    let describe_executes = masker
        .as_ref()
        .is_some_and(|m| m.profile().has_column_rules());
    let shared = Shared {
        session: RefCell::new(Session::new(describe_executes)),
        gates: RefCell::new(Gates::default()),
        mid_message: Cell::new(false),
        denials: RefCell::new(VecDeque::new()),
        epoch: Instant::now(),
        next_id: Cell::new(1),
        strict,
        catalog,
        commands: Cell::new(0),
        bytes_in: Cell::new(0),
        bytes_out: Cell::new(0),
        unflushed: Cell::new(0),
        server_read_only: Cell::new(server_read_only),
        read_write_asked: Cell::new(false),
    };
    monoio::join!(
        client_to_upstream(ctx, &shared, client_r, upstream_w, &client_w, pending),
        upstream_to_client(ctx, &shared, upstream_r, &client_w, masker),
    );
    Totals {
        commands: shared.commands.get(),
        bytes_in: shared.bytes_in.get(),
        bytes_out: shared.bytes_out.get(),
    }
}

/// What strict column rules protect in this session: as resolved at login,
/// or (should the login have resolved nothing) every relation (fail closed).
fn strict_columns(ctx: &Context<'_>, resolved: Option<&Rc<Catalog>>) -> Option<Rc<Protected>> {
    super::strict_profile(ctx.config, ctx.target)?;
    match resolved.and_then(|c| c.protected.clone()) {
        Some(p) => Some(p),
        None => super::strict_columns(ctx.config, ctx.target).map(Rc::new),
    }
}

/// Sends a FATAL error to the client and closes its side for good.
async fn fatal_to_client<W: AsyncWriteRent>(client_w: &Slot<W>, code: &str, message: &str) {
    if let Some(mut w) = client_w.close().await {
        super::io::fatal(&mut w, code, message).await;
    }
}

/// A client message the gateway cannot take (malformed, oversized, or one the
/// session machine cannot follow, such as a message the server would swallow
/// during COPY): `08P01` to the client, the upstream closed (it never sees the
/// message), then the client drained and closed.
async fn protocol_violation<R: AsyncReadRent, W: AsyncWriteRent, CW: AsyncWriteRent>(
    ctx: &Context<'_>,
    refusal: Refusal,
    client_w: &Slot<CW>,
    upstream: &mut W,
    client: &mut R,
) {
    let message = match &refusal {
        Refusal::Malformed(e) => format!("invalid message: {e}"),
        Refusal::Session(e) => format!("Sluice closed the session: {e}"),
    };
    warn!(
        "client_protocol_error",
        target = ctx.target.name,
        subject = ctx.identity.subject,
        error = message
    );
    ctx.shard.metrics.error(ErrorKind::ClientIo);
    fatal_to_client(client_w, sqlstate::PROTOCOL_VIOLATION, &message).await;
    let _ = upstream.shutdown().await;
    linger(client).await;
}

/// Why the client pump stops at a message.
enum Refusal {
    Malformed(sluice_protocols::postgres::Error),
    Session(sluice_protocols::postgres::session::Violation),
}

impl From<sluice_protocols::postgres::Error> for Refusal {
    fn from(e: sluice_protocols::postgres::Error) -> Self {
        Refusal::Malformed(e)
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
    let mut cmds: Vec<Cmd> = Vec::new();
    let mut passthrough = 0usize;
    let mut terminate = false;
    let mut held: Option<Hold> = None;
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
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    let e = Refusal::Malformed(e);
                    return protocol_violation(ctx, e, client_w, &mut upstream, &mut client).await;
                }
            };
            let avail = buf.len() - pos;
            if f.len > avail {
                if f.tag == b'd' && f.len > STREAM_THRESHOLD {
                    let copy = Frontend::CopyData(&[]);
                    let counted = shared.session.borrow_mut().handle_frontend(&copy);
                    if let Err(e) = counted {
                        let e = Refusal::Session(e);
                        return protocol_violation(ctx, e, client_w, &mut upstream, &mut client)
                            .await;
                    }
                    passthrough = f.len - avail;
                    pos = buf.len();
                }
                break;
            }
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
            if f.tag == b'X' {
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

/// Reads more into `buf`; `false` at EOF or on an error (counted as `kind`).
async fn fill<R: AsyncReadRent>(
    ctx: &Context<'_>,
    r: &mut R,
    buf: &mut Vec<u8>,
    kind: ErrorKind,
) -> bool {
    match read_more(r, buf).await {
        Ok(0) => false,
        Ok(_) => true,
        Err(_) => {
            ctx.shard.metrics.error(kind);
            false
        }
    }
}

/// How much of a read continues a message streaming through: those bytes go
/// out as they are.
fn take_passthrough(passthrough: &mut usize, available: usize) -> usize {
    let n = (*passthrough).min(available);
    *passthrough -= n;
    n
}

/// True if `buf` does not start with a whole message (so more must be read).
fn incomplete(buf: &[u8], max: usize) -> bool {
    match frame(buf, max) {
        Ok(Some(f)) => f.len > buf.len() && !(f.tag == b'd' && f.len > STREAM_THRESHOLD),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// A random marker for a placeholder statement.
fn new_marker() -> u64 {
    let mut m = [0u8; 8];
    getrandom::fill(&mut m).expect("the OS random source is available");
    u64::from_ne_bytes(m)
}

/// Replaces a command with a placeholder naming `marker`.
fn substitute(plan: &mut Plan, buf: &[u8], c: &Cmd, marker: u64) {
    let placeholder = format!("{MARKER}{marker:016x}");
    let name = match frontend::parse(c.tag, &buf[c.pos + 5..c.pos + c.len]) {
        Ok(Frontend::Parse { name, .. }) => Some(name),
        // A refused Bind never creates its portal: a Parse of a fresh name
        // fails in its place and the server skips to Sync.
        Ok(Frontend::Bind { .. }) => Some(placeholder.as_bytes()),
        _ => None,
    };
    plan.replace(c.pos, c.pos + c.len, |out| match name {
        Some(name) => encode::parse(out, name, placeholder.as_bytes(), &[]),
        None => encode::query(out, placeholder.as_bytes()),
    });
}

/// Judges one complete client message at `buf[pos..pos + f.len]`; a refused
/// statement is replaced in `plan`; commands are collected for the audit log.
/// A statement that needs approval is held (nothing recorded or changed yet)
/// unless `settled` says how its approval ended.
#[allow(clippy::too_many_arguments)] // the pump's state, passed apart to keep borrows disjoint
fn judge_message(
    ctx: &Context<'_>,
    shared: &Shared,
    buf: &[u8],
    pos: usize,
    f: Frame,
    plan: &mut Plan,
    cmds: &mut Vec<Cmd>,
    mut settled: Option<Resolution>,
) -> Result<Step, Refusal> {
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
        Frontend::Bind {
            statement, rest, ..
        } => {
            let candidates = shared.gates.borrow().candidates(statement, seq);
            let verdict = if candidates.is_empty() {
                None
            } else {
                // Judged again under the policy in force now.
                let verdict = match bind_verdict(ctx, shared, &candidates, rest) {
                    Ok(Some((kind, spec))) => match settled.take() {
                        None => {
                            return Ok(Step::Hold(Hold::new(
                                kind,
                                spec,
                                &candidates,
                                Some(rest),
                                &ctx.database,
                            )))
                        }
                        Some(Resolution::Approved(id)) => {
                            approval = Some(id);
                            Verdict::Allow
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
                        Some(Resolution::Gone) => return Ok(Step::Next),
                    },
                    Ok(None) => Verdict::Allow,
                    Err(deny) => deny,
                };
                Some(verdict)
            };
            // A Bind of a gated statement is a command of its own (recorded,
            // refused by placeholder like any other).
            verdict.map(|v| ((v, None), text_of(statement)))
        }
        Frontend::Close { kind, name } => {
            if kind == b'S' {
                shared.gates.borrow_mut().close(name, seq).map_err(full)?;
            }
            None
        }
        Frontend::Password(_) => {
            return Err(Refusal::Malformed(
                sluice_protocols::postgres::Error::Malformed("unexpected password"),
            ))
        }
        _ => None,
    };
    let mut account = Account::None;
    if let Some(((mut verdict, statements), text)) = judged {
        // A statement (not a Parse) that needs approval runs only once settled.
        if let (Verdict::Approve { rule, spec, kind }, true) = (&verdict, f.tag != b'P') {
            match settled.take() {
                None => {
                    return Ok(Step::Hold(Hold::new(
                        *kind,
                        spec.clone(),
                        &[buf[text.clone()].into()],
                        None,
                        &ctx.database,
                    )))
                }
                Some(Resolution::Approved(id)) => {
                    approval = Some(id);
                    verdict = Verdict::Allow;
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
                Some(Resolution::Gone) => return Ok(Step::Next),
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
        .map_err(Refusal::Session)?;
    if let (true, Frontend::Execute { portal, .. }) = (fwd.describe_portal, &msg) {
        plan.replace(pos, pos, |out| encode::describe(out, b'P', portal));
    }
    Ok(Step::Next)
}

/// How a `Bind` of a gated name is treated: `Ok(Some)` held for approval under
/// that spec, `Ok(None)` allowed (the policy changed), `Err` refused.
#[allow(clippy::type_complexity)]
fn bind_verdict(
    ctx: &Context<'_>,
    shared: &Shared,
    candidates: &[Rc<[u8]>],
    bind: &[u8],
) -> Result<Option<(Kind, Arc<sluice_config::policy::ApprovalSpec>)>, Verdict> {
    let mut hold: Option<(Kind, Arc<sluice_config::policy::ApprovalSpec>)> = None;
    // Each candidate is judged with this Bind's values written in, so a
    // setting that takes its value from a parameter is judged by that value.
    let params = frontend::bind_params(bind).map_err(|e| Verdict::Deny {
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

fn judge(ctx: &Context<'_>, shared: &Shared, sql: &[u8]) -> (Verdict, Option<Rc<[Statement]>>) {
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

/// Writes the batch's command records; in strict durability waits until they are
/// on disk. If the log cannot take them, every allowed command of the batch is
/// refused with `53100` instead of running unrecorded.
async fn record_commands(
    ctx: &Context<'_>,
    shared: &Shared,
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
                    || c.tag == b'F';
                let writes = c
                    .statements
                    .as_ref()
                    .is_some_and(|s| s.iter().any(|st| st.flags.writes))
                    || c.tag == b'F';
                let unbounded = c
                    .statements
                    .as_ref()
                    .is_some_and(|s| s.iter().any(|st| st.flags.unbounded));
                let rec = Rec::begin(out, "command", now_ms())
                    .str("session", &ctx.session)
                    .num("cmd", c.id)
                    .str("target", &ctx.target.name)
                    .str("subject", &ctx.identity.subject)
                    .str("protocol", "postgres")
                    .str(
                        "message",
                        match c.tag {
                            b'Q' => "query",
                            b'P' => "parse",
                            b'B' => "bind",
                            _ => "function_call",
                        },
                    )
                    .text("text", &buf[c.text.clone()])
                    .strs("kinds", kinds)
                    .bool("writes", writes)
                    .bool("opaque", opaque)
                    .bool("unbounded", unbounded);
                match &c.verdict {
                    Verdict::Allow => match c.approval {
                        Some(id) => rec.str("decision", "allow").num("approval", id).end(),
                        None => rec.str("decision", "allow").end(),
                    },
                    // A prepared statement: each execution waits for approval.
                    Verdict::Approve { rule, spec, .. } => rec
                        .str("decision", "approve")
                        .num("rule", *rule as u64 + 1)
                        .strs("approvers", spec.approvers.iter())
                        .end(),
                    Verdict::Deny { message, rule, .. } => {
                        let rec = rec.str("decision", "deny").str("reason", message);
                        match rule {
                            Some(r) => rec.num("rule", *r as u64 + 1).end(),
                            None => rec.end(),
                        }
                    }
                }
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
    // Reads go upstream at once, the flush overlapping the query, only where
    // the server itself refuses writes (a standby, a read-only role or
    // database): the text alone cannot prove a statement writes nothing (a
    // view, an operator or a function shadowing a built-in may). Their
    // results wait for the record instead (in `upstream_to_client`).
    // Anything else waits before it is forwarded.
    let text = |c: &Cmd| &buf[c.text.clone()];
    let asks_read_write = |t: &[u8]| {
        [&b"write"[..], b"read_only", b"read only"]
            .iter()
            .any(|w| t.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w)))
    };
    let reads_only = cmds.iter().all(|c| {
        matches!(c.verdict, Verdict::Deny { .. })
            || (matches!(c.tag, b'Q' | b'P' | b'B')
                && c.statements
                    .as_ref()
                    .is_some_and(|s| s.iter().all(Statement::read_only)))
    });
    // Once asked, the shortcut is gone for the session: no more scanning.
    if !shared.read_write_asked.get()
        && !reads_only
        && cmds.iter().any(|c| asks_read_write(text(c)))
    {
        shared.read_write_asked.set(true);
    }
    let server_enforced = shared.server_read_only.get() && !shared.read_write_asked.get();
    if failed.is_none() && any_allowed {
        if let Some(t) = last {
            if reads_only && server_enforced && audit.strict() {
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

async fn upstream_to_client<R: AsyncReadRent, CW: AsyncWriteRent>(
    ctx: &Context<'_>,
    shared: &Shared,
    mut upstream: R,
    client_w: &Slot<CW>,
    mut masker: Option<super::masking::RowMasker>,
) {
    let max = ctx.config.gateway.max_message.max(1 << 30);
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut plan = Plan::new();
    let mut passthrough = 0usize;
    let mut result = Outcome::default();
    loop {
        if !fill(ctx, &mut upstream, &mut buf, ErrorKind::UpstreamIo).await {
            break;
        }
        let mut pos = take_passthrough(&mut passthrough, buf.len());
        result.bytes += pos as u64;
        let mut broken = None;
        while passthrough == 0 {
            let f = match frame(&buf[pos..], max) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    broken = Some((sqlstate::PROTOCOL_VIOLATION, e.to_string()));
                    break;
                }
            };
            let avail = buf.len() - pos;
            let streamable = masker.is_none() && matches!(f.tag, b'D' | b'd');
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
            if f.len > avail {
                // With masking on, every value is inspected whole: nothing streams.
                if streamable && f.len > STREAM_THRESHOLD {
                    if let Err(e) = shared.session.borrow_mut().handle_backend(f.tag) {
                        broken = Some((sqlstate::PROTOCOL_VIOLATION, e.to_string()));
                        break;
                    }
                    passthrough = f.len - avail;
                    result.bytes += avail as u64;
                    if f.tag == b'D' {
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
    let mut i = 0;
    while i + 5 <= greeting.len() {
        let len = u32::from_be_bytes([
            greeting[i + 1],
            greeting[i + 2],
            greeting[i + 3],
            greeting[i + 4],
        ]) as usize;
        let Some(body) = greeting.get(i + 5..i + 1 + len) else {
            break;
        };
        if let Ok(Backend::ParameterStatus { name, value }) = backend::parse(greeting[i], body) {
            if let Some(ro) = read_only_status(name, value) {
                read_only |= ro;
            }
        }
        i += 1 + len.max(4);
    }
    read_only
}

/// Waits until the records of every command forwarded ahead of its record
/// (proven read-only, strict durability) are durable.
async fn results_may_leave(
    ctx: &Context<'_>,
    shared: &Shared,
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

/// What came back for the current result group.
#[derive(Default)]
struct Outcome {
    rows: u64,
    bytes: u64,
    error: Option<String>,
    masked: Vec<(&'static str, u64)>,
}

/// The marker of a placeholder's syntax error, if this ErrorResponse body has one.
fn error_marker(body: &[u8]) -> Option<u64> {
    let Ok(Backend::ErrorResponse(fields)) = backend::parse(b'E', body) else {
        return None;
    };
    let m = fields.get(b'M')?;
    let i = memchr::memmem::find(m, MARKER.as_bytes())?;
    let hex = std::str::from_utf8(m.get(i + MARKER.len()..i + MARKER.len() + 16)?).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

/// Looks at one complete upstream message; may rewrite it in `plan` or mask it in
/// place.
#[allow(clippy::too_many_arguments)] // the pump's state, passed apart to keep borrows disjoint
fn inspect_backend(
    ctx: &Context<'_>,
    shared: &Shared,
    buf: &mut [u8],
    pos: usize,
    f: Frame,
    plan: &mut Plan,
    result: &mut Outcome,
    masker: Option<&mut super::masking::RowMasker>,
) -> Result<(), String> {
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
    let denial = if f.tag == b'E' {
        error_marker(&buf[pos + 5..pos + f.len]).and_then(|m| {
            let mut denials = shared.denials.borrow_mut();
            let i = denials.iter().position(|d| d.marker == m)?;
            denials.remove(i)
        })
    } else {
        None
    };
    // The encoding must stay one the classifier reads like the server.
    if f.tag == b'S' {
        if let Ok(Backend::ParameterStatus { name, value }) =
            backend::parse(f.tag, &buf[pos + 5..pos + f.len])
        {
            if let Some(ro) = read_only_status(name, value) {
                shared.server_read_only.set(ro);
            }
            if name == b"client_encoding"
                && sluice_protocols::postgres::encoding::class(value)
                    == sluice_protocols::postgres::encoding::Class::Unsafe
            {
                return Err(
                    "client_encoding changed to a multibyte encoding Sluice cannot read safely"
                        .into(),
                );
            }
        }
    }
    if let Some(m) = masker {
        if denial.is_none() {
            m.message(f.tag, &mut buf[pos + 5..pos + f.len])?;
        }
        if f.tag == b'Z' {
            result.masked = m.take_counts();
        }
        if f.tag == b'S' && !m.is_secrets_only() {
            if let Ok(Backend::ParameterStatus { name, value }) =
                backend::parse(f.tag, &buf[pos + 5..pos + f.len])
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
        b'1' => shared.gates.borrow_mut().parse_complete(),
        b'3' => shared.gates.borrow_mut().close_complete(),
        b'E' => shared.gates.borrow_mut().error(answering),
        _ => {}
    }
    match f.tag {
        b'D' => {
            result.rows += 1;
            result.bytes += f.len as u64;
        }
        b'd' => result.bytes += f.len as u64,
        b'E' => match denial {
            Some(d) => {
                plan.replace(pos, pos + f.len, |out| {
                    out.extend_from_slice(&error_bytes(d.code, &d.message, Some(&d.detail)));
                });
            }
            None if result.error.is_none() => {
                let msg =
                    backend::parse(f.tag, &buf[pos + 5..pos + f.len]).map_err(|e| e.to_string())?;
                if let Backend::ErrorResponse(fields) = msg {
                    let text =
                        |c| String::from_utf8_lossy(fields.get(c).unwrap_or_default()).into_owned();
                    result.error = Some(format!("{}: {}", text(b'C'), text(b'M')));
                }
            }
            None => {}
        },
        b'Z' => {
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
                        audit.note(|out| {
                            let rec = Rec::begin(out, "result", now_ms())
                                .str("session", &ctx.session)
                                .str("target", &ctx.target.name)
                                .str("subject", &ctx.identity.subject)
                                .ids("cmds", g.commands.iter().copied())
                                .num("rows", result.rows)
                                .num("bytes", result.bytes)
                                .num("duration_us", elapsed.as_micros() as u64)
                                .counts("masked", &result.masked);
                            match &result.error {
                                Some(e) => rec.str("error", e).end(),
                                None => rec.end(),
                            }
                        });
                    }
                }
            }
            *result = Outcome::default();
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
