//! `protocol = "tcp"`: a plain L4 pass-through.
//!
//! There is no identity at L4, so the configuration must open such a target to
//! everyone explicitly (`access = ["*"]`). Each direction is pumped by its own loop
//! with one reused buffer (bounded memory per connection, no allocation per read);
//! when one side finishes sending, its EOF is passed on with `shutdown(SHUT_WR)` so
//! half-closed connections (a client that sends a request and then `shutdown`s its
//! write side) work as they would directly.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Instant;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use sluice_config::{Config, Target};

use crate::audit::event::{Event as _, SessionEnd, SessionStart};
use crate::error::Error;
use crate::metrics::ErrorKind;
use crate::shard::Shard;
use crate::{debug, warn};

pub async fn serve(
    shard: &Shard,
    index: usize,
    target: &Target,
    config: &Config,
    client: TcpStream,
    peer: SocketAddr,
) {
    let started = Instant::now();
    let upstream =
        match crate::upstream::tcp(&target.upstream, config.gateway.connect_timeout).await {
            Ok(s) => s,
            Err(e) => {
                // Plain TCP has no way to tell the client why: it is closed.
                let e = Error::unreachable(&target.name, e);
                shard.failed(&e);
                warn!(
                    "upstream_connect_failed",
                    target = target.name,
                    peer = peer,
                    error = e.detail
                );
                return;
            }
        };
    if let Some(audit) = shard.audit() {
        audit.note(|out| {
            SessionStart {
                session: None,
                target: &target.name,
                protocol: "tcp",
                subject: None,
                groups: &[],
                client: &peer.to_string(),
                tls: None,
                shard: Some(shard.id),
                login: None,
            }
            .encode(out)
        });
    }
    let m = shard.metrics.target(index);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let size = config.gateway.buffer_size;
    let (up, down) = monoio::join!(
        pump(client_read, upstream_write, size, &m.bytes_from_client),
        pump(upstream_read, client_write, size, &m.bytes_from_upstream),
    );
    let up_bytes = *up.as_ref().unwrap_or(&0);
    let down_bytes = *down.as_ref().unwrap_or(&0);
    for (result, kind) in [(up, ErrorKind::ClientIo), (down, ErrorKind::UpstreamIo)] {
        if let Err(e) = result {
            // A reset from either side is a normal way for a session to end at L4.
            if e.kind() != std::io::ErrorKind::ConnectionReset {
                shard.metrics.error(kind);
                warn!(
                    "relay_error",
                    target = target.name,
                    peer = peer,
                    side = kind.label(),
                    error = e
                );
            }
        }
    }
    if let Some(audit) = shard.audit() {
        audit.note(|out| {
            SessionEnd {
                session: None,
                target: &target.name,
                protocol: "tcp",
                subject: None,
                client: Some(&peer.to_string()),
                duration_ms: Some(started.elapsed().as_millis() as u64),
                commands: None,
                bytes_from_client: Some(up_bytes),
                bytes_to_client: Some(down_bytes),
            }
            .encode(out)
        });
    }
    debug!(
        "session_closed",
        target = target.name,
        peer = peer,
        ms = started.elapsed().as_millis()
    );
}

/// Copies `from` → `to` until EOF, then half-closes `to`. Returns the bytes moved.
async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(
    mut from: R,
    mut to: W,
    size: usize,
    counter: &Cell<u64>,
) -> std::io::Result<u64> {
    let mut buf = Vec::with_capacity(size);
    let mut total = 0u64;
    loop {
        let (read, b) = from.read(buf).await;
        buf = b;
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = to.shutdown().await;
                return Err(e);
            }
        };
        super::bench_slowdown();
        let (written, b) = to.write_all(buf).await;
        buf = b;
        written?;
        total += n as u64;
        counter.set(counter.get() + n as u64);
        buf.clear();
    }
    to.shutdown().await?;
    Ok(total)
}
