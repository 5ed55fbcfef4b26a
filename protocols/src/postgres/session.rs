//! What the server owes the client: a sans-IO model of a PostgreSQL session's
//! message flow, so every answer is attributed to the message it answers.
//!
//! The driver tells the machine about each client message it forwards
//! ([`Session::handle_frontend`]) and each server message it receives
//! ([`Session::handle_backend`]); nothing here does I/O or reads a clock. The
//! machine keeps the queue of answers the server still owes, in order (the
//! server answers strictly in order), and knows the protocol's rules for it:
//!
//! - `Parse`, `Bind`, `Close` are owed `ParseComplete`, `BindComplete`,
//!   `CloseComplete`; `Describe` of a statement `ParameterDescription` then
//!   `RowDescription`/`NoData`, of a portal `RowDescription`/`NoData`;
//!   `Execute` rows then `CommandComplete`/`EmptyQueryResponse`/
//!   `PortalSuspended` (or a COPY); `Sync`, `Query` and `FunctionCall` end with
//!   `ReadyForQuery`. `Flush` is owed nothing.
//! - An `ErrorResponse` to an extended-protocol message makes the server skip
//!   every message up to the next `Sync` (also those not sent yet).
//! - COPY FROM STDIN: once the server is in copy-in, it ignores `Sync` and
//!   `Flush` until the client's `CopyDone`/`CopyFail`; outside a copy it ignores
//!   `CopyData`/`CopyDone`/`CopyFail`. Any other client message during copy-in
//!   would be swallowed by the server as an error: the machine refuses it.
//!
//! When asked to (`describe_executes`), the machine makes every `Execute` carry
//! its own result shape: it tells the driver to send a `Describe` of the portal
//! right before it, and routes that answer to the gateway instead of the client.
//! Rows are then always preceded by the `RowDescription` of the very portal that
//! produced them, with the result formats its `Bind` asked for, however the
//! client interleaves statements, portals and round trips. That is what column
//! masking rules need.
//!
//! Anything the server sends that the queue does not allow is a [`Violation`]:
//! the driver ends the session (fail closed) rather than guess.
//!
//! The machine also keeps the session's accounts ([`Session::forward`]): which
//! of the driver's commands each sync group ran. A `Parse` registers its
//! statement name, a `Bind` the portal it makes from it, a `Close` forgets
//! them, an `Execute` counts its portal's command in the group, and the
//! server's `ReadyForQuery` completes the group ([`Session::take_done`]), so
//! its results are recorded against exactly the commands that produced them.
//!
//! ```
//! use sluice_protocols::postgres::backend::tag;
//! use sluice_protocols::postgres::frontend::Bind;
//! use sluice_protocols::postgres::session::{Session, Route};
//! use sluice_protocols::postgres::Frontend;
//! let mut s = Session::new(true);
//! s.handle_frontend(&Frontend::Bind(Bind { portal: b"", statement: b"s1", rest: b"" })).unwrap();
//! let e = s.handle_frontend(&Frontend::Execute { portal: b"", max_rows: 0 }).unwrap();
//! assert!(e.describe_portal, "a Describe goes before the Execute");
//! s.handle_frontend(&Frontend::Sync).unwrap();
//! assert_eq!(s.handle_backend(tag::BIND_COMPLETE).unwrap(), Route::Client);
//! // The answer to the injected Describe:
//! assert_eq!(s.handle_backend(tag::ROW_DESCRIPTION).unwrap(), Route::Gateway);
//! assert_eq!(s.handle_backend(tag::DATA_ROW).unwrap(), Route::Client);
//! assert_eq!(s.handle_backend(tag::COMMAND_COMPLETE).unwrap(), Route::Client);
//! assert_eq!(s.handle_backend(tag::READY_FOR_QUERY).unwrap(), Route::Client);
//! assert!(s.idle());
//! ```

use std::collections::VecDeque;

use super::backend::tag;
use super::frontend::{self, Bind};
use super::Frontend;

/// Most forwarded messages awaiting the server's answers (two bytes each; a
/// run of `CopyData` counts once).
pub const MAX_IN_FLIGHT: usize = 1 << 20;

/// What one forwarded client message is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    Parse,
    Bind,
    Close,
    /// `ParameterDescription` (then `described` is set), then a row shape.
    DescribeStatement {
        described: bool,
    },
    /// A row shape; `injected`: the gateway's own Describe, answered to it.
    DescribePortal {
        injected: bool,
    },
    Execute,
    /// A simple query: any results, then `ReadyForQuery`.
    Query,
    FunctionCall,
    Sync,
    /// Client COPY messages: owed nothing, but they say where a copy-in ends.
    CopyData,
    CopyEnd,
}

impl Owed {
    fn is_copy(self) -> bool {
        matches!(self, Owed::CopyData | Owed::CopyEnd)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    None,
    /// The server reads COPY data from the client.
    In,
    /// The server sends COPY data.
    Out,
}

/// Where a server message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Client,
    /// The answer to a message the gateway added: it is the gateway's to read
    /// (a `RowDescription` still goes through the masking hook), never the
    /// client's.
    Gateway,
}

/// What the driver must do with a client message it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Send a `Describe` of the `Execute`'s portal right before it.
    pub describe_portal: bool,
    /// The server will answer this message with a `ReadyForQuery` of its own
    /// (a `Sync` it does not ignore, a `Query`, a `FunctionCall`): it ends a
    /// sync group. Sync points are numbered from 1 in this order.
    pub sync_point: bool,
}

/// How a forwarded client message counts in the session's accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// Not a command of its own (`Describe`, `Execute`, `Close`, `Sync`, a
    /// `Bind` of a statement that needs no judging, ...).
    None,
    /// The driver's command with this id, forwarded as sent.
    Command(u64),
    /// A command the driver refused: what it forwards instead fails, and
    /// registers no name.
    Refused,
}

/// The commands one sync group ran, complete once the server answers its
/// sync point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its sync point, numbered from 1 as [`Forward::sync_point`] counts them.
    pub seq: u64,
    /// Command ids, each once, in the order they were counted.
    pub commands: Vec<u64>,
    /// The driver's stamp at its sync point (a clock reading; opaque here).
    pub stamp: u64,
}

/// Most statement and portal names remembered for the accounts; beyond it they
/// are forgotten (results are then not attributed to a statement).
const MAX_NAMES: usize = 4096;

/// The session's accounts (see the module documentation).
#[derive(Debug, Default)]
struct Accounts {
    statements: std::collections::HashMap<Vec<u8>, u64>,
    portals: std::collections::HashMap<Vec<u8>, u64>,
    /// Commands of the group being sent, and the same as a set.
    open: Vec<u64>,
    counted: std::collections::HashSet<u64>,
    /// Sent groups awaiting their `ReadyForQuery`, oldest first.
    groups: VecDeque<Group>,
    /// Sync points sent.
    sent: u64,
    /// The group whose `ReadyForQuery` just arrived.
    done: Option<Group>,
}

impl Accounts {
    fn count(&mut self, id: u64) {
        if self.counted.insert(id) {
            self.open.push(id);
        }
    }

    fn name(map: &mut std::collections::HashMap<Vec<u8>, u64>, name: &[u8], id: u64) {
        if map.len() >= MAX_NAMES && !map.contains_key(name) {
            map.clear();
        }
        map.insert(name.to_vec(), id);
    }

    fn note(&mut self, msg: &Frontend<'_>, account: Account) {
        if account == Account::Refused {
            // What the name held is gone or replaced on the server: a later
            // Execute of it is no command's.
            if let Frontend::Parse { name, .. } = msg {
                self.statements.remove(*name);
            }
            return;
        }
        if let Account::Command(id) = account {
            self.count(id);
        }
        match (msg, account) {
            (Frontend::Parse { name, .. }, Account::Command(id)) => {
                Self::name(&mut self.statements, name, id)
            }
            (
                Frontend::Bind(Bind {
                    portal, statement, ..
                }),
                _,
            ) => {
                if let Some(&id) = self.statements.get(*statement) {
                    Self::name(&mut self.portals, portal, id);
                }
            }
            (
                Frontend::Close {
                    kind: frontend::kind::STATEMENT,
                    name,
                },
                _,
            ) => {
                self.statements.remove(*name);
            }
            (Frontend::Close { name, .. }, _) => {
                self.portals.remove(*name);
            }
            (Frontend::Execute { portal, .. }, _) => {
                if let Some(&id) = self.portals.get(*portal) {
                    self.count(id);
                }
            }
            _ => {}
        }
    }

    /// A sync point the server ignored: its commands run on in the next group.
    fn void(&mut self, seq: u64) {
        let Some(i) = self.groups.iter().position(|g| g.seq == seq) else {
            return;
        };
        let g = self.groups.remove(i).expect("found");
        let mut ids = g.commands;
        let into_open = i == self.groups.len();
        let next = match self.groups.get_mut(i) {
            Some(next) => &mut next.commands,
            None => &mut self.open,
        };
        ids.append(next);
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(*id));
        *next = ids;
        if into_open {
            self.counted = seen;
        }
    }
}

/// The session cannot be followed: the driver must end it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("the server sent {0:?} when it owed {1}")]
    Unexpected(char, &'static str),
    #[error("too many client messages awaiting the server's answer")]
    TooMany,
    #[error("a {0:?} message during COPY FROM STDIN would be swallowed by the server")]
    DuringCopy(char),
    #[error("a password message after login")]
    Password,
    #[error("a {0:?} message inside an extended-protocol pipeline: send Sync first")]
    InPipeline(char),
}

/// The session's message flow, as seen by a gateway between client and server.
#[derive(Debug)]
pub struct Session {
    queue: VecDeque<Owed>,
    describe_executes: bool,
    copy: Copy,
    /// The server is (or will be) in copy-in and the client has not ended it
    /// yet: its `Sync`/`Flush` are ignored by the server.
    copy_in_open: bool,
    /// After an error, the server discards client messages up to a `Sync` the
    /// client has not sent yet.
    skipping: bool,
    /// The client sent extended-protocol messages since its last `Sync`.
    group_open: bool,
    /// Sync points the server has answered, and those it voided (a `Sync`
    /// that reached it during COPY IN): together they number the next.
    answered: u64,
    voided_total: u64,
    accounts: Accounts,
}

impl Session {
    /// `describe_executes`: give every `Execute` its own `Describe`.
    pub fn new(describe_executes: bool) -> Session {
        Session {
            queue: VecDeque::new(),
            describe_executes,
            copy: Copy::None,
            copy_in_open: false,
            skipping: false,
            group_open: false,
            answered: 0,
            voided_total: 0,
            accounts: Accounts::default(),
        }
    }

    /// A client message is about to be forwarded, as `account` says; `stamp`
    /// is kept with the sync group it ends, if it ends one. What the server
    /// will owe for it is [`Session::handle_frontend`]'s to count.
    pub fn forward(
        &mut self,
        msg: &Frontend<'_>,
        account: Account,
        stamp: u64,
    ) -> Result<Forward, Violation> {
        let fwd = self.handle_frontend(msg)?;
        self.accounts.note(msg, account);
        if fwd.sync_point {
            let a = &mut self.accounts;
            a.sent += 1;
            let commands = std::mem::take(&mut a.open);
            a.counted.clear();
            a.groups.push_back(Group {
                seq: a.sent,
                commands,
                stamp,
            });
        }
        Ok(fwd)
    }

    /// The sync point a message forwarded now belongs to.
    pub fn next_sync(&self) -> u64 {
        self.accounts.sent + 1
    }

    /// The sync point the server is answering: the group of the last
    /// `ReadyForQuery` until [`Session::take_done`], else the oldest open one.
    pub fn answering(&self) -> u64 {
        let a = &self.accounts;
        match (&a.done, a.groups.front()) {
            (Some(g), _) | (None, Some(g)) => g.seq,
            (None, None) => a.sent + 1,
        }
    }

    /// The group the last `ReadyForQuery` completed, once.
    pub fn take_done(&mut self) -> Option<Group> {
        self.accounts.done.take()
    }

    /// How many sync points the server will never answer on their own: a
    /// `Sync` that reaches the server during COPY IN is ignored, and its sync
    /// group runs on to the next one.
    pub fn voided(&self) -> u64 {
        self.voided_total
    }

    /// Nothing is owed: every forwarded message has been answered.
    pub fn idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// A client message is about to be forwarded.
    pub fn handle_frontend(&mut self, msg: &Frontend<'_>) -> Result<Forward, Violation> {
        let mut fwd = Forward {
            describe_portal: false,
            sync_point: false,
        };
        if self.queue.len() >= MAX_IN_FLIGHT {
            return Err(Violation::TooMany);
        }
        let owed = match msg {
            // Only where a copy stream ends matters: a run of data is one entry.
            Frontend::CopyData(_) if self.queue.back() == Some(&Owed::CopyData) => return Ok(fwd),
            Frontend::CopyData(_) => Owed::CopyData,
            Frontend::CopyDone | Frontend::CopyFail(_) => {
                self.copy_in_open = false;
                Owed::CopyEnd
            }
            // Ignored by the server during copy-in.
            Frontend::Sync | Frontend::Flush if self.copy_in_open => {
                self.group_open &= !matches!(msg, Frontend::Sync);
                return Ok(fwd);
            }
            Frontend::Flush | Frontend::Terminate => return Ok(fwd),
            Frontend::Password(_) => return Err(Violation::Password),
            other if self.copy_in_open => return Err(Violation::DuringCopy(tag_of(other))),
            // Inside an unfinished extended group the server may discard a
            // Query or FunctionCall (after an error) without answering it:
            // the gateway could no longer number the answers.
            Frontend::Query(_) | Frontend::FunctionCall { .. } if self.group_open => {
                return Err(Violation::InPipeline(tag_of(msg)))
            }
            Frontend::Sync => {
                self.skipping = false;
                self.group_open = false;
                fwd.sync_point = true;
                Owed::Sync
            }
            // Discarded by the server until the client's Sync.
            _ if self.skipping => {
                self.group_open = true;
                return Ok(fwd);
            }
            Frontend::Parse { .. } => Owed::Parse,
            Frontend::Bind(_) => Owed::Bind,
            Frontend::Close { .. } => Owed::Close,
            Frontend::Describe {
                kind: frontend::kind::STATEMENT,
                ..
            } => Owed::DescribeStatement { described: false },
            Frontend::Describe { .. } => Owed::DescribePortal { injected: false },
            Frontend::Execute { .. } => {
                if self.describe_executes {
                    self.queue
                        .push_back(Owed::DescribePortal { injected: true });
                    fwd.describe_portal = true;
                }
                Owed::Execute
            }
            Frontend::Query(_) => {
                fwd.sync_point = true;
                Owed::Query
            }
            Frontend::FunctionCall { .. } => {
                fwd.sync_point = true;
                Owed::FunctionCall
            }
        };
        if matches!(
            owed,
            Owed::Parse
                | Owed::Bind
                | Owed::Close
                | Owed::DescribeStatement { .. }
                | Owed::DescribePortal { .. }
                | Owed::Execute
        ) {
            self.group_open = true;
        }
        self.queue.push_back(owed);
        self.settle();
        Ok(fwd)
    }

    /// A server message with this tag arrived; where it goes.
    pub fn handle_backend(&mut self, tag: u8) -> Result<Route, Violation> {
        // Asynchronous messages may come at any time.
        if matches!(
            tag,
            tag::PARAMETER_STATUS | tag::NOTICE_RESPONSE | tag::NOTIFICATION_RESPONSE
        ) {
            return Ok(Route::Client);
        }
        self.accounts.done = None;
        self.settle();
        let head = self.queue.front().copied();
        let unexpected = |owed: &'static str| Err(Violation::Unexpected(tag as char, owed));
        if self.copy == Copy::Out && matches!(tag, tag::COPY_DATA | tag::COPY_DONE) {
            return Ok(Route::Client);
        }
        let Some(head) = head else {
            // An error or notice with nothing owed: the server reporting on
            // the session itself (terminated by an administrator, idle
            // timeout); it closes the connection after a FATAL.
            return match tag {
                tag::ERROR_RESPONSE => Ok(Route::Client),
                _ => unexpected("nothing"),
            };
        };
        let mut route = Route::Client;
        match (tag, head) {
            (tag::PARSE_COMPLETE, Owed::Parse)
            | (tag::BIND_COMPLETE, Owed::Bind)
            | (tag::CLOSE_COMPLETE, Owed::Close) => self.pop(),
            (tag::PARAMETER_DESCRIPTION, Owed::DescribeStatement { described: false }) => {
                self.queue[0] = Owed::DescribeStatement { described: true };
            }
            (tag::ROW_DESCRIPTION | tag::NO_DATA, Owed::DescribeStatement { described: true }) => {
                self.pop()
            }
            (tag::ROW_DESCRIPTION | tag::NO_DATA, Owed::DescribePortal { injected }) => {
                if injected {
                    route = Route::Gateway;
                }
                self.pop();
            }
            (tag::ROW_DESCRIPTION, Owed::Query) => {}
            (tag::DATA_ROW, Owed::Execute | Owed::Query) if self.copy == Copy::None => {}
            (tag::COMMAND_COMPLETE, Owed::Execute) => {
                self.end_copy();
                self.pop();
            }
            (tag::EMPTY_QUERY_RESPONSE | tag::PORTAL_SUSPENDED, Owed::Execute)
                if self.copy == Copy::None =>
            {
                self.pop()
            }
            (tag::COMMAND_COMPLETE, Owed::Query) => self.end_copy(),
            (tag::EMPTY_QUERY_RESPONSE, Owed::Query) if self.copy == Copy::None => {}
            (tag::COPY_IN_RESPONSE, Owed::Execute | Owed::Query) if self.copy == Copy::None => {
                self.copy_in()?
            }
            (tag::COPY_OUT_RESPONSE, Owed::Execute | Owed::Query) if self.copy == Copy::None => {
                self.copy = Copy::Out
            }
            (tag::FUNCTION_CALL_RESPONSE, Owed::FunctionCall) => {}
            (tag::READY_FOR_QUERY, Owed::Sync | Owed::Query | Owed::FunctionCall) => {
                self.copy = Copy::None;
                self.answered += 1;
                self.pop();
                self.accounts.done = self.accounts.groups.pop_front();
            }
            (tag::ERROR_RESPONSE, _) => self.error(head),
            (_, owed) => return unexpected(describe(owed)),
        }
        self.settle();
        Ok(route)
    }

    fn pop(&mut self) {
        self.queue.pop_front();
    }

    /// `CommandComplete`: a copy-in ended with the client's stream consumed.
    fn end_copy(&mut self) {
        if self.copy == Copy::In {
            self.drop_copy_stream();
        }
        self.copy = Copy::None;
    }

    /// Client COPY messages at the head are owed nothing unless a copy-in is
    /// reading them.
    fn settle(&mut self) {
        if self.copy != Copy::In {
            while self.queue.front().is_some_and(|o| o.is_copy()) {
                self.queue.pop_front();
            }
        }
    }

    /// `CopyInResponse`: the server reads COPY data; until the client's end
    /// of it, its `Sync`s (already forwarded or not) are ignored.
    fn copy_in(&mut self) -> Result<(), Violation> {
        self.copy = Copy::In;
        let mut i = 1;
        while i < self.queue.len() {
            match self.queue[i] {
                Owed::CopyData => i += 1,
                Owed::CopyEnd => return Ok(()),
                Owed::Sync => {
                    // Its number: those answered or voided, then the sync
                    // points queued up to it.
                    let queued = self
                        .queue
                        .iter()
                        .take(i + 1)
                        .filter(|o| matches!(o, Owed::Sync | Owed::Query | Owed::FunctionCall))
                        .count() as u64;
                    let seq = self.answered + self.voided_total + queued;
                    self.accounts.void(seq);
                    self.voided_total += 1;
                    self.queue.remove(i);
                }
                // The server would take it as a broken copy and swallow it.
                _ => return Err(Violation::DuringCopy('?')),
            }
        }
        self.copy_in_open = true;
        Ok(())
    }

    /// `ErrorResponse` while `head` is owed.
    fn error(&mut self, head: Owed) {
        let copy_in = self.copy == Copy::In;
        self.copy = Copy::None;
        match head {
            // A simple query, a function call, a failing commit at Sync: the
            // ReadyForQuery still follows.
            Owed::Query | Owed::FunctionCall | Owed::Sync => {
                if copy_in {
                    // The client's copy stream is discarded by the server.
                    self.drop_copy_stream();
                }
            }
            _ => {
                // Extended protocol: everything up to the next Sync is skipped,
                // the rest of a copy stream included.
                while self.queue.front().is_some_and(|o| *o != Owed::Sync) {
                    self.queue.pop_front();
                }
                if self.queue.is_empty() {
                    self.skipping = true;
                    self.copy_in_open = false;
                }
            }
        }
    }

    /// Removes the copy stream behind the head (the server drops it).
    fn drop_copy_stream(&mut self) {
        while self.queue.get(1).is_some_and(|o| o.is_copy()) {
            let end = self.queue.remove(1) == Some(Owed::CopyEnd);
            if end {
                return;
            }
        }
        self.copy_in_open = false;
    }
}

fn tag_of(msg: &Frontend<'_>) -> char {
    match msg {
        Frontend::Query(_) => 'Q',
        Frontend::Parse { .. } => 'P',
        Frontend::Bind(_) => 'B',
        Frontend::Describe { .. } => 'D',
        Frontend::Execute { .. } => 'E',
        Frontend::Close { .. } => 'C',
        Frontend::FunctionCall { .. } => 'F',
        _ => '?',
    }
}

fn describe(owed: Owed) -> &'static str {
    match owed {
        Owed::Parse => "ParseComplete",
        Owed::Bind => "BindComplete",
        Owed::Close => "CloseComplete",
        Owed::DescribeStatement { described: false } => "ParameterDescription",
        Owed::DescribeStatement { described: true } | Owed::DescribePortal { .. } => {
            "RowDescription or NoData"
        }
        Owed::Execute => "the results of an Execute",
        Owed::Query => "the results of a Query",
        Owed::FunctionCall => "FunctionCallResponse",
        Owed::Sync => "ReadyForQuery",
        Owed::CopyData | Owed::CopyEnd => "nothing",
    }
}

#[cfg(test)]
mod tests;
