//! Sluice: a Layer-7 access gateway between the identities that ask for work (people,
//! CI jobs, AI agents) and the production systems that do it.
//!
//! This crate is the gateway itself: the shard-per-core runtime, the per-protocol
//! drivers that glue sockets to the pure codecs in `sluice-protocols`, the admin API
//! and the command line. Parsing lives in `sluice-protocols`, configuration in
//! `sluice-config`; nothing here parses a wire format by hand.
//!
//! # Layout
//!
//! Floors, top to bottom; a module imports only from its own floor or lower
//! ones, and the modules form no circle (`core/tests/layers.rs` checks both).
//!
//! 1. [`cli`]: the `sluice` command (`serve`, `check`, `demo`, `token`,
//!    `audit`, `approvals`).
//! 2. [`runtime`]: one OS thread and monoio runtime per shard, listeners and
//!    accept loops, signals, reload, graceful shutdown.
//! 3. [`gateway`]: one driver per target protocol (`postgres`, `http`, `tcp`),
//!    gluing sockets to the pure codecs; [`admin`]: the admin listener
//!    (`/healthz`, `/metrics`, the approvals and audit API).
//! 4. [`shard`]: per-shard state: the configuration [`shard::Generation`]
//!    compiled once per (re)load, token and SQL caches, the upstream pool; and
//!    [`shard::Shared`], what every shard shares.
//! 5. Services the drivers ask: [`policy`] (statement decisions),
//!    [`identity`] (tokens, JWKS), [`audit`] (the hash-chained log and its
//!    writer), [`approvals`] (requests, votes, the hold flow).
//! 6. Below everything: [`error`] (the one data-path error type),
//!    [`metrics`], [`notify`] (single-thread wake-ups), [`net`] (listeners and
//!    stream helpers), [`tls`] (rustls configurations), [`upstream`]
//!    (connections to targets and their pool), [`log`], [`localserver`]
//!    (throw-away PostgreSQL servers for the demo and tests).

#![deny(clippy::await_holding_refcell_ref)]

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod cli;
pub mod error;
pub mod gateway;
pub mod identity;
pub mod localserver;
pub mod log;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod policy;
pub mod runtime;
pub mod shard;
pub mod tls;
pub mod upstream;
