//! Connections to upstreams, shared by every driver: TCP within the
//! configured timeout, the TLS client handshake (`upstream_tls`), and a
//! shard's pool of idle connections (HTTP reuses them across callers).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio_rustls::ClientTlsStream;
use sluice_config::{Target, UpstreamTls};

/// An upstream connection, plain or TLS.
pub enum Upstream {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>, RawFd),
}

impl Upstream {
    /// An idle connection that must not carry another request: the upstream
    /// closed or reset it, or sent bytes nobody asked for (a late body, a second
    /// response), which would otherwise be read as the next caller's answer.
    pub fn closed(&self) -> bool {
        let fd = match self {
            Upstream::Plain(s) => s.as_raw_fd(),
            Upstream::Tls(_, fd) => *fd,
        };
        crate::net::poll_now(fd, libc::POLLIN | libc::POLLRDHUP) != 0
    }
}

impl AsyncReadRent for Upstream {
    async fn read<T: monoio::buf::IoBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Upstream::Plain(s) => s.read(buf).await,
            Upstream::Tls(s, _) => s.read(buf).await,
        }
    }

    async fn readv<T: monoio::buf::IoVecBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Upstream::Plain(s) => s.readv(buf).await,
            Upstream::Tls(s, _) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Upstream {
    async fn write<T: monoio::buf::IoBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Upstream::Plain(s) => s.write(buf).await,
            Upstream::Tls(s, _) => s.write(buf).await,
        }
    }

    async fn writev<T: monoio::buf::IoVecBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Upstream::Plain(s) => s.writev(buf).await,
            Upstream::Tls(s, _) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Upstream::Plain(s) => s.flush().await,
            Upstream::Tls(s, _) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Upstream::Plain(s) => s.shutdown().await,
            Upstream::Tls(s, _) => s.shutdown().await,
        }
    }
}

/// One shard's idle upstream connections, by target name and the
/// configuration generation they were opened under (a reload may change the
/// upstream's address or TLS settings: older connections are not reused).
#[derive(Default)]
pub struct Pool(HashMap<(String, u64), Vec<Upstream>>);

/// Idle connections kept per target and shard.
const POOL_PER_TARGET: usize = 64;

impl Pool {
    /// An idle connection to this target opened under `generation`, still open.
    pub fn take(&mut self, target: &str, generation: u64) -> Option<Upstream> {
        loop {
            let u = self
                .0
                .get_mut(&(target.to_owned(), generation))
                .and_then(Vec::pop)?;
            if !u.closed() {
                return Some(u);
            }
        }
    }

    /// Keeps an idle connection (dropped if the pool is full).
    pub fn put(&mut self, target: &str, generation: u64, up: Upstream) {
        let list = self.0.entry((target.to_owned(), generation)).or_default();
        if list.len() < POOL_PER_TARGET {
            list.push(up);
        }
    }

    /// Closes the connections of every generation but `generation`.
    pub fn retain_generation(&mut self, generation: u64) {
        self.0.retain(|(_, g), _| *g == generation);
    }
}

/// A TCP connection to `addr` within `timeout`, Nagle off.
pub async fn tcp(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    match monoio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err(format!(
            "connect: timed out after {} ms",
            timeout.as_millis()
        )),
    }
}

/// The TLS client handshake over `tcp`, with the target's `upstream_tls`
/// configuration (compiled with the generation, verified as configured),
/// within `timeout`.
pub async fn tls(
    config: Option<&Arc<rustls::ClientConfig>>,
    target: &Target,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<Upstream, String> {
    let fd = tcp.as_raw_fd();
    let s = tls_stream(config, target, tcp, timeout).await?;
    Ok(Upstream::Tls(Box::new(s), fd))
}

/// [`tls`], as the bare TLS stream (a driver that wants its own type).
pub async fn tls_stream(
    config: Option<&Arc<rustls::ClientConfig>>,
    target: &Target,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<ClientTlsStream<TcpStream>, String> {
    let config = config.cloned().ok_or("no upstream TLS configuration")?;
    let name = crate::tls::server_name(&target.upstream)?;
    let connector = monoio_rustls::TlsConnector::from(config);
    let handshake = connector.connect(name, tcp);
    match monoio::time::timeout(timeout, handshake).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("upstream TLS: {e}")),
        Err(_) => Err(format!(
            "upstream TLS: no handshake within {} ms",
            timeout.as_millis()
        )),
    }
}

/// A new connection to the target's upstream: TCP, then TLS unless the
/// target says `upstream_tls = "disable"` (a protocol that asks first, such
/// as PostgreSQL's `SSLRequest`, calls [`tcp`] and [`tls`] itself).
pub async fn connect(
    config: Option<&Arc<rustls::ClientConfig>>,
    target: &Target,
    timeout: Duration,
) -> Result<Upstream, String> {
    let tcp = tcp(&target.upstream, timeout).await?;
    if target.upstream_tls == UpstreamTls::Disable {
        return Ok(Upstream::Plain(tcp));
    }
    tls(config, target, tcp, timeout).await
}

/// The host keys an SSH upstream may present: the pinned `upstream_host_key`,
/// or its entries in the `upstream_known_hosts` file (read anew at each
/// login, so a rotated key is taken from the file without a reload). Never
/// empty: an upstream without a known key is never logged in to.
pub fn ssh_host_keys(target: &Target) -> Result<Vec<russh::keys::PublicKey>, String> {
    if let Some(line) = &target.upstream_host_key {
        let key = russh::keys::PublicKey::from_openssh(line)
            .map_err(|e| format!("upstream_host_key: not a readable public key: {e}"))?;
        return Ok(vec![key]);
    }
    let Some(file) = &target.upstream_known_hosts else {
        return Err("no upstream_host_key or upstream_known_hosts".into());
    };
    let (host, port) = match target.upstream.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse::<u16>().unwrap_or(22),
        ),
        None => (target.upstream.as_str(), 22),
    };
    std::fs::metadata(file).map_err(|e| format!("upstream_known_hosts {file}: {e}"))?;
    let keys = russh::keys::known_hosts::known_host_keys_path(host, port, file)
        .map_err(|e| format!("upstream_known_hosts {file}: {e}"))?;
    if keys.is_empty() {
        let name = match port {
            22 => host.to_owned(),
            _ => format!("[{host}]:{port}"),
        };
        return Err(format!(
            "upstream_known_hosts {file} has no key for {name} (add the line `ssh-keyscan -p {port} {host}` prints)"
        ));
    }
    Ok(keys.into_iter().map(|(_, k)| k).collect())
}
