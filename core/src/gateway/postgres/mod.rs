//! `protocol = "postgres"`: PostgreSQL protocol 3.0 between unchanged clients (psql,
//! pgbench, drivers) and the target's server.
//!
//! A session goes through three phases:
//! 1. **Opening** ([`serve`]): `SSLRequest` is answered `S` (when `[tls]` is set) or
//!    `N`, `GSSENCRequest` always `N`; a `CancelRequest` is looked up in the
//!    gateway's cancel keys and forwarded. Bytes sent after `SSLRequest` before the
//!    handshake are refused, and a target with `require_tls` refuses plaintext.
//! 2. **Login** ([`session`]): the client's password is its access token; the
//!    startup `user` is informational only. Once the token is verified and the
//!    caller's groups may reach the target, Sluice logs in upstream with the
//!    target's own credentials ([`login`]) and hands the client the upstream's
//!    parameters and a cancel key of its own.
//! 3. **Relay** ([`relay`]): every `Query`, `Parse` and `FunctionCall` is judged
//!    before it is forwarded; results flow back through the masking hook.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use sluice_config::{Config, Target};
use sluice_protocols::postgres::encode::{self, Report};
use sluice_protocols::postgres::encoding::Class;
use sluice_protocols::postgres::frontend::{self, Startup};
use sluice_protocols::postgres::{self as pg, DEFAULT_MAX_STARTUP};
use sluice_protocols::sql;
use sluice_protocols::Status;

use crate::audit::{now_ms, Rec};
use crate::identity::{AuthError, Identity};
use crate::metrics::ErrorKind;
use crate::policy::Verdict;
use crate::shard::{CancelTarget, Shard, TargetPlan};
use crate::{debug, info, warn};

mod approval;
mod gates;
pub(crate) mod io;
mod login;
pub mod masking;
mod relay;

use io::{fatal, read_more_timeout, Io};

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

/// Startup parameters that belong to the protocol rather than naming a setting.
/// `user` is informational (the upstream login is the target's), `database` is
/// passed unless the target fixes it, `options` is read setting by setting,
/// `replication` is refused unless off, and `_pq_.*` extensions are declined
/// with `NegotiateProtocolVersion`.
const PROTOCOL_PARAMS: &[&str] = &["user", "database", "options", "replication"];

/// Settings drivers send at every login (libpq, JDBC, npgsql, node-postgres,
/// psycopg): passed without consulting rules on kind `set`.
const DRIVER_DEFAULTS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "extra_float_digits",
    "intervalstyle",
    "geqo",
    "lc_monetary",
    "lc_numeric",
    "bytea_output",
    "standard_conforming_strings",
];

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
        match frontend::parse_startup(buf, DEFAULT_MAX_STARTUP) {
            Ok(Status::Complete(Startup::Ssl | Startup::GssEnc, n)) => {
                buf.drain(..n);
                if tcp.write_all(vec![b'N']).await.0.is_err() {
                    return false;
                }
            }
            Ok(Status::Complete(Startup::Message { .. }, _)) => return true,
            Ok(Status::Complete(Startup::Cancel { .. }, _)) | Err(_) => return false,
            Ok(Status::Partial) => match io::read_more(tcp, buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            },
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
        match frontend::parse_startup(buf, DEFAULT_MAX_STARTUP) {
            Ok(Status::Complete(Startup::Ssl, n)) => {
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
                let (res, _) = tcp.write_all(vec![if yes { b'S' } else { b'N' }]).await;
                res.ok()?;
                if yes {
                    return Some(true);
                }
            }
            Ok(Status::Complete(Startup::GssEnc, n)) => {
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
                let (res, _) = tcp.write_all(vec![b'N']).await;
                res.ok()?;
            }
            Ok(Status::Complete(Startup::Cancel { pid, key }, _)) => {
                cancel(shard, target, pid, key).await;
                return None;
            }
            Ok(Status::Complete(Startup::Message { .. }, _)) => return Some(false),
            Ok(Status::Partial) => match io::read_more(tcp, buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
            Err(e) => {
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
    let Ok(Some((identity, startup))) = login else {
        return;
    };
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
    };
    let params: Vec<(&str, &str)> = startup
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let connected = login::connect(&ctx, &params).await;
    let upstream = match connected {
        Ok(u) => u,
        Err(e) => {
            shard.metrics.error(ErrorKind::UpstreamConnect);
            warn!(
                "upstream_login_failed",
                target = target.name,
                subject = ctx.identity.subject,
                error = e.log
            );
            fatal(&mut client, &e.code, &e.client).await;
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
            Rec::begin(out, "session_start", now_ms())
                .str("session", &ctx.session)
                .str("target", &target.name)
                .str("protocol", "postgres")
                .str("subject", &ctx.identity.subject)
                .strs("groups", &ctx.identity.groups)
                .str("client", &peer.to_string())
                .bool("tls", tls)
                .num("shard", shard.id as u64)
                .end()
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
        let ro = relay::greeting_read_only(&upstream.greeting);
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
            Rec::begin(out, "session_end", now_ms())
                .str("session", &ctx.session)
                .str("target", &target.name)
                .str("subject", &ctx.identity.subject)
                .num("duration_ms", started.elapsed().as_millis() as u64)
                .num("commands", t.commands)
                .num("bytes_from_client", t.bytes_in)
                .num("bytes_to_client", t.bytes_out)
                .end()
        });
    }
    info!(
        "session_end",
        target = target.name,
        subject = ctx.identity.subject,
        peer = peer
    );
}

/// Reads the startup message, asks for the password (the token) and checks it.
/// Returns the caller and the startup parameters to pass upstream.
#[allow(clippy::too_many_arguments)]
async fn client_login<C: Io>(
    shard: &Shard,
    index: usize,
    target: &Target,
    client: &mut C,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
    tls: bool,
) -> Option<(Rc<Identity>, Vec<(String, String)>)> {
    let (n, params) = loop {
        match frontend::parse_startup(buf, DEFAULT_MAX_STARTUP) {
            Ok(Status::Complete(Startup::Message { minor, params, .. }, n)) => {
                let unknown: Vec<&str> = params
                    .iter()
                    .map(|(k, _)| k)
                    .filter(|k| k.starts_with("_pq_."))
                    .collect();
                if minor > 0 || !unknown.is_empty() {
                    let mut out = Vec::new();
                    encode::negotiate_protocol_version(&mut out, &unknown);
                    let (res, _) = client.write_all(out).await;
                    res.ok()?;
                }
                let owned: Vec<(String, String)> = params
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                break (n, owned);
            }
            Ok(Status::Complete(_, _)) => {
                fatal(
                    client,
                    sqlstate::PROTOCOL_VIOLATION,
                    "unexpected request after TLS negotiation",
                )
                .await;
                return None;
            }
            Ok(Status::Partial) => match read_more_timeout(client, buf, LOGIN_TIMEOUT).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
            Err(e) => {
                fatal(
                    client,
                    sqlstate::PROTOCOL_VIOLATION,
                    &format!("invalid startup packet: {e}"),
                )
                .await;
                return None;
            }
        }
    };
    buf.drain(..n);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    if target.require_tls && !tls {
        fatal(
            client,
            sqlstate::INVALID_AUTHORIZATION,
            &format!(
                "target `{}` requires TLS: connect with sslmode=require",
                target.name
            ),
        )
        .await;
        return None;
    }
    if get("replication").is_some_and(|r| r != "false" && r != "0" && r != "off") {
        fatal(
            client,
            sqlstate::FEATURE_NOT_SUPPORTED,
            "replication connections are not allowed through Sluice",
        )
        .await;
        return None;
    }
    let settings = match startup_settings(&params) {
        Ok(s) => s,
        Err(e) => {
            fatal(client, sqlstate::FEATURE_NOT_SUPPORTED, &e).await;
            return None;
        }
    };
    // The password is the caller's access token.
    let mut out = Vec::with_capacity(16);
    encode::auth_cleartext_password(&mut out);
    let (res, _) = client.write_all(out).await;
    res.ok()?;
    let token = loop {
        match pg::frame(buf, 64 * 1024) {
            Ok(Some(f)) if buf.len() >= f.len => {
                if f.tag != b'p' {
                    fatal(
                        client,
                        sqlstate::PROTOCOL_VIOLATION,
                        "expected a password message",
                    )
                    .await;
                    return None;
                }
                let body = &buf[5..f.len];
                let token = body.strip_suffix(&[0]).unwrap_or(body);
                let token = String::from_utf8_lossy(token).into_owned();
                buf.drain(..f.len);
                break token;
            }
            Ok(_) => match read_more_timeout(client, buf, LOGIN_TIMEOUT).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
            Err(e) => {
                fatal(
                    client,
                    sqlstate::PROTOCOL_VIOLATION,
                    &format!("invalid password message: {e}"),
                )
                .await;
                return None;
            }
        }
    };
    let user = get("user").unwrap_or("");
    let identity = match shard.authenticate(&token).await {
        Ok(id) => id,
        Err(e) => {
            warn!(
                "auth_failed",
                target = target.name,
                peer = peer,
                startup_user = user,
                reason = e
            );
            if let Some(audit) = shard.audit() {
                audit.note(|out| {
                    Rec::begin(out, "auth_failure", now_ms())
                        .str("target", &target.name)
                        .str("protocol", "postgres")
                        .str("client", &peer.to_string())
                        .str("startup_user", user)
                        .str("reason", &e.to_string())
                        .end()
                });
            }
            let code = match e {
                AuthError::Missing => sqlstate::INVALID_AUTHORIZATION,
                _ => sqlstate::INVALID_PASSWORD,
            };
            fatal(client, code, &format!("Sluice refused the token: {e}")).await;
            return None;
        }
    };
    let generation = shard.generation();
    let policy = &generation.policy;
    let allowed = policy
        .target_index(&target.name)
        .is_some_and(|t| policy.may_connect(t, policy.groups(&identity.groups)));
    if !allowed {
        warn!(
            "access_denied",
            target = target.name,
            subject = identity.subject,
            peer = peer,
            groups = identity.groups.join(",")
        );
        if let Some(audit) = shard.audit() {
            audit.note(|out| {
                Rec::begin(out, "access_denied", now_ms())
                    .str("target", &target.name)
                    .str("protocol", "postgres")
                    .str("client", &peer.to_string())
                    .str("subject", &identity.subject)
                    .strs("groups", &identity.groups)
                    .end()
            });
        }
        fatal(
            client,
            sqlstate::INVALID_AUTHORIZATION,
            &format!(
                "`{}` may not connect to target `{}`",
                identity.subject, target.name
            ),
        )
        .await;
        return None;
    }
    // Each setting is judged like the `SET` it amounts to.
    let resolved = crate::policy::Resolved::default();
    for (name, value) in &settings {
        let st = sql::setting(name.as_bytes(), sql::Value::Text(value.as_bytes()));
        // What drivers send at every login is not held to rules on `set`
        // (a rule denying `set` would refuse every JDBC or libpq client).
        let driver_default = st.kind == sql::Kind::Set
            && st.flags == sql::Flags::default()
            && DRIVER_DEFAULTS.contains(&name.as_str());
        let verdict = match encoding_refusal(target, &[st]) {
            Some(deny) => deny,
            None if driver_default => Verdict::Allow,
            None => shard.judge_statements(index, &identity, &resolved, &[st]),
        };
        let why = match verdict {
            Verdict::Allow => continue,
            Verdict::Deny { message, .. } => message.to_string(),
            Verdict::Approve { .. } => {
                "it needs approval, which a login cannot wait for: connect without it and SET it in the session".into()
            }
        };
        warn!(
            "startup_parameter_refused",
            target = target.name,
            subject = identity.subject,
            parameter = name,
            reason = why
        );
        fatal(
            client,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            &format!("startup parameter {name}={value} is not allowed through Sluice: {why}"),
        )
        .await;
        return None;
    }
    // The settings in the order the server applies them (`options` first, the
    // last of a name wins), then the database.
    let mut pass: Vec<(String, String)> = Vec::with_capacity(settings.len() + 2);
    for (name, value) in settings {
        pass.retain(|(k, _)| *k != name);
        pass.push((name, value));
    }
    if target.masking.is_some() {
        // Masking reads UTF-8 (any other encoding was refused above).
        pass.retain(|(k, _)| k != "client_encoding");
        pass.push(("client_encoding".into(), "UTF8".into()));
    }
    match (&target.database, get("database")) {
        (Some(db), _) => pass.push(("database".into(), db.clone())),
        (None, Some(db)) => pass.push(("database".into(), db.to_owned())),
        (None, None) => {}
    }
    if let Some(r) = get("replication") {
        pass.push(("replication".into(), r.to_owned()));
    }
    Some((identity, pass))
}

/// The settings a startup packet makes, in the order the server applies them:
/// those in `options` first, then every other parameter, names lower-cased
/// (PostgreSQL matches them without regard to case). Nothing is dropped: a
/// parameter is a setting, a protocol parameter, or an error.
pub fn startup_settings(params: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
    // PostgreSQL matches the protocol parameters by exact spelling and every
    // setting without regard to case: `User` or `-c user=...`, lower-cased
    // and passed on as a parameter of its own, would become the login user.
    // Such a look-alike is refused, never passed.
    let protocol_like = |name: &str| {
        let lower = name.to_ascii_lowercase();
        PROTOCOL_PARAMS.contains(&lower.as_str()) || lower.starts_with("_pq_.")
    };
    let mut out = Vec::new();
    for (k, v) in params {
        if k == "options" {
            for (name, value) in pg::options::parse(v).map_err(|e| e.to_string())? {
                if protocol_like(&name) {
                    return Err(format!(
                        "startup option -c {name} is not a setting and is not allowed through Sluice"
                    ));
                }
                out.push((name, value));
            }
        }
    }
    for (k, v) in params {
        if PROTOCOL_PARAMS.contains(&k.as_str()) || k.starts_with("_pq_.") {
            continue;
        }
        if k.is_empty() {
            return Err("empty startup parameter name".into());
        }
        if protocol_like(k) {
            return Err(format!(
                "startup parameter `{k}` is not allowed through Sluice (the protocol's own is `{}`)",
                k.to_ascii_lowercase()
            ));
        }
        out.push((k.to_ascii_lowercase(), v.clone()));
    }
    Ok(out)
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

/// The target's masking profile, if it has strict column rules (column rules,
/// and `strict_columns` not turned off).
pub fn strict_profile<'c>(
    config: &'c sluice_config::Config,
    target: &Target,
) -> Option<&'c sluice_config::MaskingProfile> {
    let m = config.masking.get(target.masking.as_ref()?)?;
    (m.strict_columns && !m.columns.is_empty()).then_some(m)
}

/// Strict column rules on this target: what they protect before the catalog
/// is read (the profile's column names; every relation counts), or `None`
/// when the target has no column rules or `strict_columns = false`.
pub fn strict_columns(
    config: &sluice_config::Config,
    target: &Target,
) -> Option<sluice_protocols::sql::columns::Protected> {
    let m = strict_profile(config, target)?;
    let mut columns: Vec<sluice_protocols::sql::columns::Name> = m
        .columns
        .keys()
        .map(|c| {
            let name = c.rsplit('.').next().unwrap_or(c);
            name.to_ascii_lowercase().into_bytes().into_boxed_slice()
        })
        .collect();
    columns.sort();
    columns.dedup();
    Some(sluice_protocols::sql::columns::Protected {
        columns,
        relations: None,
        views: Vec::new(),
        relation_columns: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::startup_settings;

    fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_come_from_options_first_then_parameters_lower_cased() {
        let got = startup_settings(&params(&[
            ("user", "x"),
            ("database", "d"),
            ("TimeZone", "UTC"),
            ("options", "-c geqo=off --search-path=a"),
            ("replication", "false"),
            ("_pq_.ext", "1"),
        ]))
        .unwrap();
        assert_eq!(
            got,
            params(&[("geqo", "off"), ("search_path", "a"), ("timezone", "UTC")])
        );
    }

    #[test]
    fn protocol_parameter_look_alikes_are_refused() {
        for p in [
            ("User", "postgres"),
            ("DATABASE", "x"),
            ("Options", "-c role=admin"),
            ("Replication", "database"),
            ("_PQ_.x", "1"),
            ("options", "-c user=postgres"),
            ("options", "--options=-c\\ role=x"),
            ("options", "-c Replication=database"),
            ("options", "-c _pq_.x=1"),
        ] {
            assert!(startup_settings(&params(&[p])).is_err(), "{p:?}");
        }
    }
}
