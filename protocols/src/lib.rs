//! Sans-IO, zero-copy wire codecs for the Sluice gateway.
//!
//! Every codec here is a pure function (or state machine) over byte slices: it
//! borrows from the caller's read buffer, never copies, never touches a socket or a
//! clock. The gateway's drivers (`core/src/gateway/`) own the I/O and feed bytes in.
//! A parser answers "complete, here is the message and its length", "incomplete,
//! read more" or a typed error; incomplete input is normal control flow.
//!
//! # Layout
//! - [`http`]: HTTP/1.1 request heads (admin API today; the HTTP gateway builds on it).
//! - [`postgres`]: PostgreSQL protocol 3.0, both directions, and a SCRAM client.
//! - [`sql`]: the SQL lexer and statement classifier behind the guardrails.

pub mod http;
pub mod postgres;
pub mod shell;
pub mod sql;

/// Outcome of parsing a message from the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole message, and how many bytes of the buffer it used.
    Complete(T, usize),
    /// More bytes are needed; nothing was consumed.
    Partial,
}
