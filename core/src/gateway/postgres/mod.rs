//! `protocol = "postgres"`: PostgreSQL protocol 3.0 between unchanged clients (psql,
//! pgbench, drivers) and the target's server.
//!
//! A session goes through three phases:
//! 1. **Opening** ([`serve`]): `SSLRequest` is answered `S` (when `[tls]` is set) or
//!    `N`, `GSSENCRequest` always `N`; a `CancelRequest` is looked up in the
//!    gateway's cancel keys and forwarded. Bytes sent after `SSLRequest` before the
//!    handshake are refused, and a target with `require_tls` refuses plaintext.
//! 2. **Login** ([`session`], [`startup`]): the client's password is its access
//!    token; the startup `user` is informational only. Once the token is
//!    verified and the caller's groups may reach the target, Sluice logs in
//!    upstream with the target's own credentials ([`login`]) and hands the
//!    client the upstream's parameters and a cancel key of its own.
//! 3. **Relay** ([`relay`]): every `Query`, `Parse` and `FunctionCall` is judged
//!    before it is forwarded ([`forward`], [`record`]); results flow back through
//!    the masking hook ([`results`], [`masking`]).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use sluice_config::{Config, Target};
use sluice_protocols::postgres as pg;
use sluice_protocols::postgres::encode::{self, Report};
use sluice_protocols::postgres::encoding::Class;
use sluice_protocols::postgres::frontend::Startup;
use sluice_protocols::sql;

use crate::audit::event::{Event as _, SessionEnd, SessionStart};
use crate::identity::Identity;
use crate::metrics::ErrorKind;
use crate::policy::Verdict;
use crate::shard::{CancelTarget, Shard, TargetPlan};
use crate::{debug, info, warn};

mod approval;
mod forward;
mod gates;
mod io;
mod login;
pub mod masking;
mod record;
mod relay;
mod results;
mod startup;

use io::{fatal, read_startup, Io, ReadError};
use startup::client_login;

/// How long a client has to finish TLS, startup and authentication.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// SQLSTATEs the gateway answers with.
pub mod sqlstate {
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const CONNECTION_REJECTED: &str = "08004";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// `program_limit_exceeded`.
    pub const PROGRAM_LIMIT: &str = "54000";
    /// `disk_full`: the audit log cannot take records, so nothing runs.
    pub const AUDIT_UNAVAILABLE: &str = "53100";
}

/// What the session knows about its caller and target once logged in.
pub struct Context<'a> {
    pub shard: &'a Shard,
    pub index: usize,
    pub target: &'a Target,
    /// What the target's sessions use, compiled with the configuration.
    pub plan: &'a TargetPlan,
    pub config: &'a Config,
    pub identity: Rc<Identity>,
    pub peer: SocketAddr,
    pub tls: bool,
    /// The client's socket, to notice a hang-up while a statement waits for
    /// approval (the session is not reading then).
    pub client_fd: std::os::fd::RawFd,
    /// Random id tying this session's audit records together.
    pub session: String,
    /// Target index and group bits, derived once per policy generation.
    pub resolved: crate::policy::Resolved,
    /// The database the session works in (empty: the server's default).
    pub database: String,
    /// Bumped by the client's `CancelRequest`s.
    pub cancels: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The requester's reason for statements held for approval: the startup
    /// option `-c sluice.reason=...`, then the last `SET sluice.reason`.
    pub justification: std::cell::RefCell<Option<String>>,
}

pub async fn serve(
    shard: &Shard,
    index: usize,
    target: &Target,
    plan: &TargetPlan,
    config: &Config,
    mut tcp: TcpStream,
    peer: SocketAddr,
) {
    let mut buf = Vec::with_capacity(1024);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    let opening =
        monoio::time::timeout(LOGIN_TIMEOUT, open(shard, target, &mut tcp, &mut buf)).await;
    match opening {
        Ok(Some(true)) => {
            let accepted = crate::gateway::accept_tls(shard, target, tcp, peer, LOGIN_TIMEOUT);
            if let Some(stream) = accepted.await {
                session(
                    shard,
                    index,
                    (target, plan),
                    config,
                    stream,
                    fd,
                    peer,
                    true,
                    Vec::new(),
                )
                .await
            }
        }
        Ok(Some(false)) => {
            let target = (target, plan);
            session(shard, index, target, config, tcp, fd, peer, false, buf).await
        }
        Ok(None) => {}
        Err(_) => debug!("startup_timeout", target = target.name, peer = peer),
    }
}

/// Answers a client of a target that a reload removed: the listener stays until
/// restart, but nothing is forwarded.
pub async fn refuse_removed_target(shard: &Shard, target: &Target, mut tcp: TcpStream) {
    let mut buf = Vec::with_capacity(256);
    let refuse = async {
        // Answer TLS requests with `N`, then refuse in plaintext.
        if open_plain(&mut tcp, &mut buf).await {
            fatal(
                &mut tcp,
                sqlstate::CONNECTION_REJECTED,
                &format!(
                    "target `{}` is no longer configured on this gateway",
                    target.name
                ),
            )
            .await;
        }
    };
    let _ = monoio::time::timeout(LOGIN_TIMEOUT, refuse).await;
    shard.metrics.error(ErrorKind::ClientIo);
}

/// Reads opening packets, declining TLS, until a startup message (`true`).
async fn open_plain(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        match read_startup(tcp, buf, None).await {
            Ok((Startup::Ssl | Startup::GssEnc, n)) => {
                buf.drain(..n);
                let (res, _) = tcp.write_all(vec![pg::ENCRYPTION_UNWILLING]).await;
                if res.is_err() {
                    return false;
                }
            }
            Ok((Startup::Message { .. }, _)) => return true,
            Ok((Startup::Cancel { .. }, _)) | Err(_) => return false,
        }
    }
}

/// Handles the untagged opening packets. `Some(true)`: go TLS; `Some(false)`: the
/// startup message (plaintext) is in `buf`; `None`: done (cancel, error, EOF).
async fn open(
    shard: &Shard,
    target: &Target,
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<bool> {
    loop {
        match read_startup(tcp, buf, None).await {
            Ok((Startup::Ssl, n)) => {
                if buf.len() > n {
                    // Anything sent before the handshake could be injected by a
                    // man in the middle (CVE-2021-23214): refuse, as PostgreSQL does.
                    fatal(
                        tcp,
                        sqlstate::PROTOCOL_VIOLATION,
                        "received unencrypted data after SSL request",
                    )
                    .await;
                    return None;
                }
                buf.clear();
                let yes = shard.shared.tls.is_some();
                let answer = if yes {
                    pg::SSL_WILLING
                } else {
                    pg::ENCRYPTION_UNWILLING
                };
                let (res, _) = tcp.write_all(vec![answer]).await;
                res.ok()?;
                if yes {
                    return Some(true);
                }
            }
            Ok((Startup::GssEnc, n)) => {
                if buf.len() > n {
                    fatal(
                        tcp,
                        sqlstate::PROTOCOL_VIOLATION,
                        "received unencrypted data after GSSAPI encryption request",
                    )
                    .await;
                    return None;
                }
                buf.clear();
                let (res, _) = tcp.write_all(vec![pg::ENCRYPTION_UNWILLING]).await;
                res.ok()?;
            }
            Ok((Startup::Cancel { pid, key }, _)) => {
                cancel(shard, target, pid, key).await;
                return None;
            }
            Ok((Startup::Message { .. }, _)) => return Some(false),
            Err(ReadError::Closed | ReadError::Io(_)) => return None,
            Err(ReadError::Malformed(e)) => {
                shard.metrics.error(ErrorKind::ClientIo);
                fatal(
                    tcp,
                    sqlstate::PROTOCOL_VIOLATION,
                    &format!("invalid startup packet: {e}"),
                )
                .await;
                return None;
            }
        }
    }
}

/// Forwards a client's `CancelRequest` to the upstream backend its key maps to.
async fn cancel(shard: &Shard, target: &Target, pid: u32, key: u32) {
    let Some(t) = shard.shared.cancels.lookup(pid, key) else {
        // Unknown keys are ignored silently, as PostgreSQL does.
        debug!("cancel_unknown_key", target = target.name);
        return;
    };
    t.cancels.fetch_add(1, std::sync::atomic::Ordering::Release);
    let mut out = Vec::with_capacity(16);
    encode::cancel_request(&mut out, t.pid, t.key);
    if let Ok(mut up) = crate::upstream::tcp(&t.upstream, Duration::from_secs(5)).await {
        let _ = up.write_all(out).await;
        info!("cancel_forwarded", target = target.name);
    }
}

#[allow(clippy::too_many_arguments)]
async fn session<C: Io>(
    shard: &Shard,
    index: usize,
    (target, plan): (&Target, &TargetPlan),
    config: &Config,
    mut client: C,
    client_fd: std::os::fd::RawFd,
    peer: SocketAddr,
    tls: bool,
    mut buf: Vec<u8>,
) {
    let login = monoio::time::timeout(
        LOGIN_TIMEOUT,
        client_login(shard, index, target, &mut client, &mut buf, peer, tls),
    )
    .await;
    let Ok(Some((identity, mut startup))) = login else {
        return;
    };
    // For Sluice alone: the server never sees it.
    let justification = startup
        .iter()
        .position(|(k, _)| k == approval::REASON_SETTING)
        .map(|i| startup.remove(i).1);
    let mut sid = [0u8; 8];
    getrandom::fill(&mut sid).expect("the OS random source is available");
    let ctx = Context {
        shard,
        index,
        target,
        plan,
        config,
        identity,
        peer,
        tls,
        client_fd,
        session: sid.iter().map(|b| format!("{b:02x}")).collect(),
        resolved: Default::default(),
        database: startup
            .iter()
            .find(|(k, _)| k == "database")
            .map_or_else(String::new, |(_, v)| v.clone()),
        cancels: Default::default(),
        justification: std::cell::RefCell::new(justification),
    };
    let params: Vec<(&str, &str)> = startup
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let connected = login::connect(&ctx, &params).await;
    let upstream = match connected {
        Ok(u) => u,
        Err(e) => {
            shard.failed(&e);
            warn!(
                "upstream_login_failed",
                target = target.name,
                subject = ctx.identity.subject,
                error = e.detail
            );
            fatal(&mut client, e.sqlstate(), &e.message).await;
            return;
        }
    };
    let (cpid, ckey) = shard.shared.cancels.register(CancelTarget {
        upstream: target.upstream.clone(),
        pid: upstream.pid,
        key: upstream.key,
        cancels: ctx.cancels.clone(),
    });
    info!(
        "session_start",
        target = target.name,
        subject = ctx.identity.subject,
        peer = peer,
        tls = tls,
        shard = shard.id
    );
    let started = std::time::Instant::now();
    if let Some(audit) = shard.audit() {
        audit.note(|out| {
            SessionStart {
                session: Some(&ctx.session),
                target: &target.name,
                protocol: "postgres",
                subject: Some(&ctx.identity.subject),
                groups: &ctx.identity.groups,
                client: &peer.to_string(),
                tls: Some(tls),
                shard: Some(shard.id),
                login: None,
            }
            .encode(out)
        });
    }
    let mut hello = Vec::with_capacity(upstream.greeting.len() + 64);
    encode::auth_ok(&mut hello);
    hello.extend_from_slice(&upstream.greeting);
    encode::backend_key_data(&mut hello, cpid, ckey);
    encode::ready_for_query(&mut hello, upstream.status);
    let (res, _) = client.write_all(hello).await;
    let totals = if res.is_ok() {
        let tables = upstream.catalog;
        let ro = record::greeting_read_only(&upstream.greeting);
        Some(match upstream.stream {
            crate::upstream::Upstream::Plain(s) => {
                relay::run(&ctx, client, s, buf, tables, ro).await
            }
            crate::upstream::Upstream::Tls(s, _) => {
                relay::run(&ctx, client, *s, buf, tables, ro).await
            }
        })
    } else {
        None
    };
    shard.shared.cancels.remove(cpid, ckey);
    if let Some(audit) = shard.audit() {
        let t = totals.unwrap_or(relay::Totals {
            commands: 0,
            bytes_in: 0,
            bytes_out: 0,
        });
        audit.note(|out| {
            SessionEnd {
                session: Some(&ctx.session),
                target: &target.name,
                protocol: "postgres",
                subject: Some(&ctx.identity.subject),
                client: None,
                duration_ms: Some(started.elapsed().as_millis() as u64),
                commands: Some(t.commands),
                bytes_from_client: Some(t.bytes_in),
                bytes_to_client: Some(t.bytes_out),
            }
            .encode(out)
        });
    }
    info!(
        "session_end",
        target = target.name,
        subject = ctx.identity.subject,
        peer = peer
    );
}

/// Why setting the client encoding as these statements do is refused, if it
/// is. The lexer must read every byte as the server does, so only encodings
/// whose multibyte characters never contain an ASCII byte are allowed, on every
/// target; masking also needs UTF-8.
pub fn encoding_refusal(target: &Target, statements: &[sql::Statement]) -> Option<Verdict> {
    let class = statements.iter().filter_map(|s| s.flags.encoding).max()?;
    let message = match class {
        Class::Unsafe => "client_encoding may only be set to an encoding Sluice reads exactly as the server does (UTF8, SQL_ASCII, LATIN1..10, WIN125x, EUC_*, KOI8*, ...)".to_string(),
        Class::Safe if target.masking.is_some() => format!(
            "client_encoding must stay UTF8 on target `{}`: its masking reads UTF8",
            target.name
        ),
        _ => return None,
    };
    Some(Verdict::Deny {
        message: message.into(),
        detail: "in SJIS, BIG5, GBK, UHC, JOHAB and GB18030 a character can hide a quote or backslash from the gateway".into(),
        rule: None,
    })
}

/// An `ErrorResponse` (severity ERROR) as bytes.
pub fn error_bytes(code: &str, message: &str, detail: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + message.len());
    encode::error_response(
        &mut out,
        &Report {
            detail,
            ..Report::error(code, message)
        },
    );
    out
}
