//! The relay phase: two pumps, one per direction, running in one task, and
//! the state they share.
//!
//! **Client → upstream** ([`forward`](super::forward)). Messages are framed in
//! the read buffer and forwarded in place, in one write per read. `Query`,
//! `Parse` and `FunctionCall` are judged first and recorded in the audit log
//! ([`record`](super::record): in strict durability the batch waits for the
//! records to be on disk, except reads on a session the server keeps
//! read-only, whose results wait instead). A refused one is *replaced* by a
//! placeholder the server rejects with a syntax error naming a random marker
//! (`sluice_denied_<hex>`, see [`substitute`]): the real statement never
//! reaches the upstream, and the server itself produces the error, discards
//! until `Sync` and reports the right transaction state — so simple and
//! extended protocol, pipelines and transaction blocks all behave exactly as if
//! the server had refused the statement. A refused named `Parse` leaves no
//! prepared statement behind, so a later `Bind`/`Execute` of that name fails
//! upstream, never runs. If the audit log cannot take the records, the batch's
//! commands are refused the same way with SQLSTATE `53100`: nothing runs
//! unrecorded.
//!
//! **Upstream → client** ([`results`](super::results)). An `ErrorResponse`
//! carrying a pending marker is rewritten into the gateway's own error with the
//! rule's message; `DataRow`s pass the masking hook in place; each
//! `ReadyForQuery` closes a result record (rows, bytes, error, time). Large
//! `DataRow`/`CopyData` messages stream through without being buffered whole.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Splitable};
use sluice_protocols::postgres::encode;
use sluice_protocols::postgres::frontend::{self, Frontend};
use sluice_protocols::postgres::session::Session;
use sluice_protocols::sql::columns::Protected;
use sluice_protocols::sql::Statement;

use super::forward::client_to_upstream;
use super::gates::Gates;
use super::io::Io;
use super::results::upstream_to_client;
use super::Context;
use crate::metrics::ErrorKind;
use crate::net::{read_more, write_range};
use crate::notify::Slot;
use crate::policy::Verdict;
use crate::shard::catalogs::Catalog;

/// Messages larger than this that need no inspection stream through.
pub(super) const STREAM_THRESHOLD: usize = 256 * 1024;

/// What a placeholder's name starts with.
pub(super) const MARKER: &str = "sluice_denied_";

/// A refused command's placeholder, awaiting the server's error for it.
pub(super) struct Denial {
    pub(super) marker: u64,
    pub(super) code: &'static str,
    pub(super) message: Arc<str>,
    pub(super) detail: String,
    /// Resolved (matched or skipped) by this sync point's `ReadyForQuery`.
    pub(super) sync_seq: u64,
}

/// State the two pumps share; no borrow is ever held across an `.await`.
pub(super) struct RelayState {
    /// What the server owes, so every answer is attributed to its message.
    pub(super) session: RefCell<Session>,
    /// Prepared statements whose execution needs approval, as the server sees them.
    pub(super) gates: RefCell<Gates>,
    /// The last write to the client ended inside a message streaming through
    /// (nothing else may be written to the client until it is finished).
    pub(super) mid_message: Cell<bool>,
    pub(super) denials: RefCell<VecDeque<Denial>>,
    /// Sync groups are stamped with microseconds since this instant.
    pub(super) epoch: Instant,
    pub(super) next_id: Cell<u64>,
    /// What strict column rules protect; `None`: no column rules, or not strict.
    pub(super) strict: Option<Rc<Protected>>,
    /// What the rules know of the upstream's catalog.
    pub(super) catalog: Option<Rc<Catalog>>,
    pub(super) commands: Cell<u64>,
    pub(super) bytes_in: Cell<u64>,
    pub(super) bytes_out: Cell<u64>,
    /// In strict durability, the audit ticket of read-only commands that
    /// went upstream before their records were on disk: nothing more reaches
    /// the client until the ticket is durable (0: nothing pending).
    pub(super) unflushed: Cell<u64>,
    /// The server enforces read-only for this session, as it reports
    /// (`default_transaction_read_only` or `in_hot_standby` on).
    pub(super) server_read_only: Cell<bool>,
    /// The session asked for a read-write transaction or changed the
    /// read-only setting some way the server may not report: no more reads
    /// go upstream ahead of their records.
    pub(super) read_write_asked: Cell<bool>,
    /// The last `ReadyForQuery` said idle: no transaction block is open, so
    /// the next transaction's mode is the default the server reports.
    pub(super) between_transactions: Cell<bool>,
}

/// One judged command of the current read batch.
pub(super) struct Cmd {
    pub(super) id: u64,
    pub(super) pos: usize,
    pub(super) len: usize,
    pub(super) tag: u8,
    /// The SQL text (or function call) within the read buffer.
    pub(super) text: std::ops::Range<usize>,
    pub(super) verdict: Verdict,
    pub(super) statements: Option<Rc<[Statement]>>,
    /// For a refused command, the marker of its placeholder.
    pub(super) marker: Option<u64>,
    pub(super) sync_seq: u64,
    /// The approval this command runs under.
    pub(super) approval: Option<u64>,
}

/// A write plan over the read buffer: the buffer forwarded in place, with some
/// ranges replaced (or bytes inserted, or messages dropped) by bytes held in
/// `scratch`.
pub(super) struct Plan {
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
    pub(super) fn new() -> Self {
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
    pub(super) fn reset_replacements(&mut self) {
        self.edits.retain(|(a, b, _)| a == b);
    }

    /// Replaces `buf[start..end]` with what `f` appends to the scratch buffer.
    pub(super) fn replace(&mut self, start: usize, end: usize, f: impl FnOnce(&mut Vec<u8>)) {
        let s = self.scratch.len();
        f(&mut self.scratch);
        self.edits.push((start, end, s..self.scratch.len()));
    }

    pub(super) fn finish(&mut self, end: usize) {
        self.end = end;
    }

    /// Writes the plan: in place when nothing is edited, else assembled in one
    /// buffer so an edited batch is still one write.
    pub(super) async fn write<W: AsyncWriteRent>(
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
    catalog: Option<Rc<Catalog>>,
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
    let shared = RelayState {
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
        between_transactions: Cell::new(true),
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
    let fallback = ctx.plan.strict.as_ref()?;
    match resolved.and_then(|c| c.protected.clone()) {
        Some(p) => Some(p),
        None => Some(Rc::new((**fallback).clone())),
    }
}

/// Sends a FATAL error to the client and closes its side for good.
pub(super) async fn fatal_to_client<W: AsyncWriteRent>(
    client_w: &Slot<W>,
    code: &str,
    message: &str,
) {
    if let Some(mut w) = client_w.close().await {
        super::io::fatal(&mut w, code, message).await;
    }
}

/// Reads more into `buf`; `false` at EOF or on an error (counted as `kind`).
pub(super) async fn fill<R: AsyncReadRent>(
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
pub(super) fn take_passthrough(passthrough: &mut usize, available: usize) -> usize {
    let n = (*passthrough).min(available);
    *passthrough -= n;
    n
}

/// A random marker for a placeholder statement.
pub(super) fn new_marker() -> u64 {
    let mut m = [0u8; 8];
    getrandom::fill(&mut m).expect("the OS random source is available");
    u64::from_ne_bytes(m)
}

/// Replaces a command with a placeholder naming `marker`.
pub(super) fn substitute(plan: &mut Plan, buf: &[u8], c: &Cmd, marker: u64) {
    let placeholder = format!("{MARKER}{marker:016x}");
    let name = match frontend::parse(c.tag, &buf[c.pos + 5..c.pos + c.len]) {
        Ok(Frontend::Parse { name, .. }) => Some(name),
        // A refused Bind never creates its portal: a Parse of a fresh name
        // fails in its place and the server skips to Sync.
        Ok(Frontend::Bind(_)) => Some(placeholder.as_bytes()),
        _ => None,
    };
    plan.replace(c.pos, c.pos + c.len, |out| match name {
        Some(name) => encode::parse(out, name, placeholder.as_bytes(), &[]),
        None => encode::query(out, placeholder.as_bytes()),
    });
}
