//! Protocol drivers: each glues a client socket and an upstream socket to a codec
//! and asks policy, masking and audit along the way. Drivers hold no parsing of
//! their own; wire formats live in `sluice-protocols`.
//!
//! - [`http`]: HTTP/1.1 APIs behind bearer tokens (`protocol = "http"`).
//! - [`postgres`]: PostgreSQL protocol 3.0 (`protocol = "postgres"`).
//! - [`tcp`]: plain L4 pass-through (`protocol = "tcp"`).
//! - [`tls`]: rustls configurations for clients and upstreams.

pub mod http;
pub mod postgres;
pub mod tcp;
pub mod tls;
