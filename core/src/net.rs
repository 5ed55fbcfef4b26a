//! Socket helpers below the drivers: shard listeners and a look at a socket
//! without reading it.

use std::net::SocketAddr;

use monoio::net::{ListenerOpts, TcpListener};

/// Binds a listener that shares its port with the other shards' listeners.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind_with_config(addr, &ListenerOpts::new().reuse_port(true).backlog(4096))
}

/// The events (of `events`, plus hang-up and error) a socket has right now,
/// without waiting: how an idle session notices its peer without reading.
pub fn poll_now(fd: std::os::fd::RawFd, events: i16) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout; the caller owns the fd.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n > 0 {
        p.revents
    } else {
        0
    }
}
