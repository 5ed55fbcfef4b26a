//! Protocol drivers: each glues a client socket and an upstream socket to a codec
//! and asks policy, masking and audit along the way. Drivers hold no parsing of
//! their own; wire formats live in `sluice-protocols`.
//!
//! - [`postgres`]: PostgreSQL protocol 3.0 (`protocol = "postgres"`).
//! - [`tcp`]: plain L4 pass-through (`protocol = "tcp"`).
//! - [`tls`]: rustls configurations for clients and upstreams.

pub mod postgres;
pub mod tcp;
pub mod tls;
