//! A shard's loops: bind its listeners, accept connections and hand each to
//! its target's driver, take control messages, drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::{TcpListener, TcpStream};
use sluice_config::{Config, Protocol, Target};

use super::catch::{panic_message, CatchUnwind};
use crate::metrics::ErrorKind;
use crate::net::bind;
use crate::shard::{Control, Shard, TargetPlan};
use crate::{gateway, info, warn};

/// Runs the shard until it is told to stop and its sessions have drained.
///
/// `ready` receives `Ok` once every listener is bound, or the reason it could not.
pub async fn run(
    shard: Rc<Shard>,
    control: flume::Receiver<Control>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    audit_link: Option<crate::audit::ShardLink>,
) {
    if let (Some(audit), Some(link)) = (shard.shared.audit.clone(), audit_link) {
        let _ = shard.audit.set(crate::audit::ShardAudit::new(audit, link));
    }
    let generation = shard.startup().clone();
    let config = &generation.config;
    let mut listeners = Vec::with_capacity(config.targets.len());
    for (index, t) in config.targets.iter().enumerate() {
        if t.protocol == Protocol::Ssh {
            // Served by the SSH endpoint's own runtime.
            continue;
        }
        match bind(t.listen) {
            Ok(l) => listeners.push((index, l)),
            Err(e) => {
                let _ = ready.send(Err(format!(
                    "target `{}`: cannot listen on {}: {e}",
                    t.name, t.listen
                )));
                return;
            }
        }
    }
    let admin = match config.gateway.admin.map(bind).transpose() {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(format!("admin listener: cannot listen: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));

    monoio::spawn(control_loop(shard.clone(), control));
    for (index, listener) in listeners {
        let s = shard.clone();
        monoio::spawn(accept_loop(shard.clone(), listener, move |stream, peer| {
            session(s.clone(), index, stream, peer)
        }));
    }
    if let Some(listener) = admin {
        let s = shard.clone();
        monoio::spawn(accept_loop(shard.clone(), listener, move |stream, peer| {
            admin_connection(s.clone(), stream, peer)
        }));
    }

    shard.stopping.wait().await;
    let open = shard.sessions();
    if open > 0 {
        info!("draining", shard = shard.id, sessions = open);
        let drain = shard.generation().config.gateway.drain_timeout;
        if monoio::time::timeout(drain, shard.wait_idle())
            .await
            .is_err()
        {
            warn!(
                "drain_timeout",
                shard = shard.id,
                sessions_closed = shard.sessions(),
                timeout_ms = drain.as_millis()
            );
        }
    }
}

/// One client connection to target `index`, from accept to close.
async fn session(shard: Rc<Shard>, index: usize, stream: TcpStream, peer: SocketAddr) {
    let _guard = shard.session_opened(index);
    let started = Instant::now();
    let generation = shard.generation();
    let name = shard.target_name(index);
    // A reload may have removed the target; its listener stays until restart.
    let Some((target, plan)) = generation.target(name) else {
        warn!(
            "target_removed",
            shard = shard.id,
            target = name,
            peer = peer
        );
        // The listener was bound for the start-up target of this name.
        if let Some((t, _)) = shard.startup().target(name) {
            if t.protocol == Protocol::Postgres {
                gateway::postgres::refuse_removed_target(&shard, t, stream).await;
            }
        }
        return;
    };
    let config = &generation.config;
    let result =
        CatchUnwind::new(dispatch(&shard, index, target, plan, config, stream, peer)).await;
    if let Err(panic) = result {
        shard.metrics.error(ErrorKind::Panic);
        crate::error!(
            "session_panic",
            shard = shard.id,
            target = name,
            peer = peer,
            message = panic_message(&*panic)
        );
    }
    shard.metrics.session_ended(started.elapsed());
}

async fn dispatch(
    shard: &Shard,
    index: usize,
    target: &Target,
    plan: &TargetPlan,
    config: &Config,
    stream: TcpStream,
    peer: SocketAddr,
) {
    match target.protocol {
        Protocol::Tcp => gateway::tcp::serve(shard, index, target, config, stream, peer).await,
        Protocol::Postgres => {
            gateway::postgres::serve(shard, index, target, plan, config, stream, peer).await
        }
        Protocol::Http => {
            gateway::http::serve(shard, index, target, plan, config, stream, peer).await
        }
        // Refused at start-up (see `runtime::serve`); a reload cannot add listeners.
        other => warn!(
            "protocol_unavailable",
            target = target.name,
            protocol = other.as_str()
        ),
    }
}

async fn control_loop(shard: Rc<Shard>, control: flume::Receiver<Control>) {
    while let Ok(message) = control.recv_async().await {
        match message {
            Control::Shutdown => shard.stopping.set(),
            Control::Reload(generation) => shard.install(&generation),
            Control::Scrape(reply) => {
                let _ = reply.send(shard.metrics.snapshot(shard.id));
            }
        }
    }
}

/// Accepts connections until the shard stops, then closes the listener so the
/// kernel sends new connections to no one (they are refused).
async fn accept_loop<F, Fut>(shard: Rc<Shard>, listener: TcpListener, mut handle: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let stop = shard.stopping.wait();
    let mut stop = std::pin::pin!(stop);
    loop {
        monoio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    monoio::spawn(handle(stream, peer));
                }
                Err(e) => {
                    shard.metrics.error(ErrorKind::Accept);
                    warn!("accept_failed", shard = shard.id, error = e);
                    // Out of descriptors or memory: back off instead of spinning.
                    monoio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// One admin connection: over TLS with `[tls]`'s certificate when
/// `gateway.admin_tls`, else plain.
async fn admin_connection(
    shard: Rc<Shard>,
    stream: monoio::net::TcpStream,
    peer: std::net::SocketAddr,
) {
    let tls = shard.generation().config.gateway.admin_tls;
    let Some(config) = shard.shared.tls.clone().filter(|_| tls) else {
        return crate::admin::serve_connection(shard, stream).await;
    };
    let acceptor = monoio_rustls::TlsAcceptor::from(config);
    match monoio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(tls)) => crate::admin::serve_connection(shard, tls).await,
        Ok(Err(e)) => crate::info!(
            "tls_handshake_failed",
            target = "admin",
            peer = peer,
            error = e
        ),
        Err(_) => crate::info!(
            "tls_handshake_failed",
            target = "admin",
            peer = peer,
            error = "timed out"
        ),
    }
}
