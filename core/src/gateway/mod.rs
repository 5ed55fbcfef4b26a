//! Protocol drivers: each glues a client socket and an upstream socket to a codec
//! and asks policy, masking and audit along the way. Drivers hold no parsing of
//! their own; wire formats live in `sluice-protocols`.
//!
//! - [`tcp`]: plain L4 pass-through (`protocol = "tcp"`).

pub mod tcp;
