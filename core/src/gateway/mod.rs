//! Protocol drivers: each glues a client socket and an upstream socket to a codec
//! and asks policy, masking and audit along the way. Drivers hold no parsing of
//! their own; wire formats live in `sluice-protocols`.
//!
//! - [`http`]: HTTP/1.1 APIs behind bearer tokens (`protocol = "http"`).
//! - [`postgres`]: PostgreSQL protocol 3.0 (`protocol = "postgres"`).
//! - [`tcp`]: plain L4 pass-through (`protocol = "tcp"`).
//! - [`tls`]: rustls configurations for clients and upstreams.

pub mod http;

/// Extra work per request or read, only in a deliberately slowed build
/// (`--features bench-slowdown`): it proves the load-test gate catches a
/// regression (`SMOKE_FEATURES=sluice/bench-slowdown loadtest/smoke.sh`).
#[inline(always)]
pub fn bench_slowdown() {
    #[cfg(feature = "bench-slowdown")]
    {
        let v = vec![0x5au8; 2 << 20];
        std::hint::black_box(v.clone());
    }
}

pub mod postgres;
pub mod tcp;
pub mod tls;
