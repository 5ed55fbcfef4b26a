//! Sluice: a Layer-7 access gateway between the identities that ask for work (people,
//! CI jobs, AI agents) and the production systems that do it.
//!
//! This crate is the gateway itself: the shard-per-core runtime, the per-protocol
//! drivers that glue sockets to the pure codecs in `sluice-protocols`, the admin API
//! and the command line. Parsing lives in `sluice-protocols`, configuration in
//! `sluice-config`; nothing here parses a wire format by hand.
//!
//! # Layout
//! - [`runtime`]: shards (one monoio runtime per core), listeners, signals, reload,
//!   graceful shutdown.
//! - [`gateway`]: one driver per target protocol (`tcp` today).
//! - [`admin`]: the admin listener: `/healthz`, Prometheus `/metrics`.
//! - [`metrics`]: per-shard counters and latency histograms, merged on scrape.
//! - [`cli`]: the `sluice` command.
//! - [`log`]: one structured line per event.

#![deny(clippy::await_holding_refcell_ref)]

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod cli;
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
