//! Protocol drivers: each glues a client socket and an upstream socket to a codec
//! and asks policy, masking and audit along the way. Drivers hold no parsing of
//! their own; wire formats live in `sluice-protocols`.
//!
//! - [`http`]: HTTP/1.1 APIs behind bearer tokens (`protocol = "http"`).
//! - [`postgres`]: PostgreSQL protocol 3.0 (`protocol = "postgres"`).
//! - [`ssh`]: SSH hosts (`protocol = "ssh"`), on a tokio runtime of its own.
//! - [`tcp`]: plain L4 pass-through (`protocol = "tcp"`).

use sluice_config::Target;

use crate::shard::Shard;

pub mod http;
pub mod postgres;
pub mod ssh;
pub mod tcp;

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

/// The server side of a client's TLS handshake with `[tls]`, within `limit`;
/// `None` (logged and counted) if there is no `[tls]`, or it fails or times out.
pub async fn accept_tls(
    shard: &Shard,
    target: &Target,
    tcp: monoio::net::TcpStream,
    peer: std::net::SocketAddr,
    limit: std::time::Duration,
) -> Option<monoio_rustls::ServerTlsStream<monoio::net::TcpStream>> {
    let tls = shard.shared.tls.clone()?;
    let acceptor = monoio_rustls::TlsAcceptor::from(tls);
    let error = match monoio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(e)) => {
            shard.metrics.error(crate::metrics::ErrorKind::ClientIo);
            e.to_string()
        }
        Err(_) => "timed out".to_owned(),
    };
    crate::info!(
        "tls_handshake_failed",
        target = target.name,
        peer = peer,
        error = error
    );
    None
}
