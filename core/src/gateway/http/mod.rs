//! `protocol = "http"`: HTTP/1.1 APIs behind bearer tokens.
//!
//! Per request, on one client connection (keep-alive and pipelining: requests
//! are answered in order, one at a time):
//! 1. The head is parsed strictly (`sluice_protocols::http`); anything that
//!    could be smuggled (CL+TE, duplicate CL, obs-fold, bare CR/LF, a
//!    non-canonical path) is answered `400` and never forwarded.
//! 2. `Authorization: Bearer <JWT>` is verified; the caller's groups must reach
//!    the target; the method/path rules decide: `403` with a JSON body, a hold
//!    for approval (`202` in no-wait mode), or forward.
//! 3. The command is recorded in the audit log (in strict durability, on disk)
//!    before a byte goes upstream.
//! 4. The caller's token is removed and the target's own credential injected
//!    (a header or a query parameter); hop-by-hop headers are dropped; the body
//!    streams through with its framing checked.
//! 5. The response streams back. With masking on, a JSON body is masked by
//!    field path and detectors (buffered, re-framed), Server-Sent Events and
//!    JSON lines event by event, any other text body through the streaming
//!    masker; an encoded (compressed) body is never
//!    passed through unmasked: the request asks for `identity`, and a response
//!    that is encoded anyway is refused with `502`.
//!
//! Upstream connections are kept per shard and reused across client
//! connections.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use sluice_config::policy::{ApprovalSpec, Decision};
use sluice_config::{Config, Target};
use sluice_masking::json::{mask_escaped_runs, mask_json, FieldRules};
use sluice_masking::{EventMasker, Events, Masker, Profile, StreamMasker};
use sluice_protocols::http::forms::{form_kind, form_override_values, Form, FormScan};
use sluice_protocols::http::rewrite::{
    self, canonical, finish_head, rule_path, METHOD_OVERRIDES, REWRITE_HEADERS,
};
use sluice_protocols::http::{self, ChunkedDecoder, Framing, Header};
use sluice_protocols::Status;

use crate::approvals::{self, Key, Opened, Refusal, Settled};
use crate::audit::event::{AuthFailure, Command, CommandResult, Event as _, Via};
use crate::error::{Error, Kind, Source};
use crate::identity::Identity;
use crate::metrics::ErrorKind;
use crate::net::{linger, read_more_timeout, write_range};
use crate::shard::{Shard, TargetPlan};
use crate::upstream::{self, Upstream};
use crate::{debug, info, warn};

const MAX_HEAD: usize = 32 * 1024;
const MAX_HEADERS: usize = 100;
/// How long an idle keep-alive connection waits for its next request.
const IDLE: Duration = Duration::from_secs(60);
/// How long a started request or response may stall between reads.
const STALL: Duration = Duration::from_secs(30);
/// How long after its last response a client's own upstream connection is
/// reused for a replayable request of the same caller without checking it
/// first. Bytes the upstream sends unasked within this window reach that same
/// caller only (as a 502 or a masked answer): such a connection is never pooled,
/// and pooled connections, shared by callers, are always checked.
const FRESH: Duration = Duration::from_secs(1);
/// Longest request body held whole (an approval is bound to the body).
const MAX_HELD_BODY: u64 = 1 << 20;

mod bodies;
mod exchange;
mod respond;

use exchange::{exchange, release, Next};
use respond::reads_responses;

/// What a session knows once a request's caller is known.
struct Context<'a> {
    shard: &'a Shard,
    index: usize,
    target: &'a Target,
    /// What the target's sessions use, compiled with the configuration.
    plan: &'a TargetPlan,
    config: &'a Config,
    peer: SocketAddr,
    /// The caller's address as `X-Forwarded-For` gives it.
    peer_ip: String,
    fd: RawFd,
    session: String,
    cache: RefCell<SessionCache>,
}

/// What a client connection keeps between its requests.
#[derive(Default)]
struct SessionCache {
    /// The last token and the identity it proved.
    identity: Option<(String, Rc<Identity>)>,
    /// A JSON masker kept between responses (its counts reset each time).
    json_masker: Option<Masker>,
    /// The masker for response header values, kept the same way.
    head_masker: Option<Masker>,
    ubuf: Vec<u8>,
    /// The upstream connection this client used last: kept for its next
    /// request, handed to the shard's pool when the client leaves.
    up: Option<(Upstream, Instant, Rc<Identity>)>,
    /// That connection was once reused without the liveness check: if the
    /// upstream ever sent bytes unasked on it, its answers may be one behind,
    /// so it never goes to the shard's pool (other callers).
    up_unchecked: bool,
}

pub async fn serve(
    shard: &Shard,
    index: usize,
    target: &Target,
    plan: &TargetPlan,
    config: &Config,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let mut sid = [0u8; 8];
    getrandom::fill(&mut sid).expect("the OS random source is available");
    let cx = Context {
        shard,
        index,
        target,
        plan,
        config,
        peer,
        peer_ip: peer.ip().to_string(),
        fd: tcp.as_raw_fd(),
        session: sid.iter().map(|b| format!("{b:02x}")).collect(),
        cache: RefCell::new(SessionCache {
            ubuf: Vec::with_capacity(16 * 1024),
            ..Default::default()
        }),
    };
    if !target.require_tls {
        session(&cx, tcp).await;
        return release(&cx);
    }
    if let Some(stream) = super::accept_tls(shard, target, tcp, peer, STALL).await {
        session(&cx, stream).await;
        release(&cx);
    }
}

/// An answer the gateway gives itself: a status and a JSON body.
struct Reply {
    status: u16,
    body: String,
    close: bool,
    extra: &'static str,
}

impl Reply {
    fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            close: false,
            extra: "",
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, serde_json::json!({ "error": message.into() }))
    }

    /// A gateway error as its HTTP status and message (never its detail).
    fn failure(e: &Error) -> Reply {
        Reply::error(e.http_status(), e.message.clone())
    }

    fn closing(mut self) -> Reply {
        self.close = true;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            202 => "Accepted",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            408 => "Request Timeout",
            413 => "Content Too Large",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Error",
        };
        format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}{}\r\n{}",
            self.status,
            self.body.len(),
            self.extra,
            if self.close { "connection: close\r\n" } else { "" },
            self.body
        )
        .into_bytes()
    }
}

/// A request whose head was accepted, ready to go upstream.
struct Forward {
    method: String,
    /// Path and query as the client sent them (for audit and approvals).
    target: String,
    head: Vec<u8>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    identity: Rc<Identity>,
    hold: Option<(u16, std::sync::Arc<ApprovalSpec>)>,
    /// A form body, which frameworks read `_method` from.
    form: Option<Form>,
    /// `method_override = true` and a form body: the path the rules see, to
    /// judge the body's `_method` once it is read.
    form_rule_path: Option<String>,
    /// A header or the query named an override (judged as `judged`).
    overridden: bool,
    /// The client speaks HTTP/1.1 (may be answered chunked).
    http11: bool,
    /// The method the rules judged (an override's, when the target judges
    /// overrides): what approvals bind and records say.
    judged: String,
    /// The requester's reason (`Sluice-Reason`), should the request be held.
    justification: Option<String>,
}

async fn session<C: AsyncReadRent + AsyncWriteRent>(cx: &Context<'_>, mut client: C) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        // The next request head (pipelined ones may already be buffered),
        // checked as soon as it is whole.
        // A head must arrive whole within `head_timeout` of its first byte: a
        // client trickling bytes cannot hold a connection open forever.
        let mut head_since: Option<Instant> = None;
        let head = loop {
            let mut headers = [Header::EMPTY; MAX_HEADERS];
            match http::parse_request(&buf, &mut headers, MAX_HEAD) {
                Ok(Status::Complete(req, n)) => {
                    let started = Instant::now();
                    break Ok((admit(cx, &req).await, n, started));
                }
                Ok(Status::Partial) => {}
                Err(e) => break Err(e),
            }
            let wait = if buf.is_empty() {
                IDLE
            } else {
                let since = *head_since.get_or_insert_with(Instant::now);
                cx.config
                    .gateway
                    .head_timeout
                    .saturating_sub(since.elapsed())
            };
            let res = if wait.is_zero() {
                Err(std::io::ErrorKind::TimedOut.into())
            } else {
                read_more_timeout(&mut client, &mut buf, wait).await
            };
            match res {
                Ok(0) => return,
                // (A timed-out read gives no buffer back: `head_since` tells
                // whether a head had begun.)
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut && head_since.is_some() => {
                    cx.shard.metrics.error(ErrorKind::ClientIo);
                    let r = Reply::error(408, "the request head did not arrive in time");
                    return refuse(&mut client, r).await;
                }
                Err(_) => return,
                Ok(_) => {}
            }
        };
        let (admitted, head_len, started) = match head {
            Ok(h) => h,
            Err(e) => {
                cx.shard.metrics.error(ErrorKind::ClientIo);
                let status = match e {
                    http::Error::HeadTooLarge(_) | http::Error::TooManyHeaders(_) => 431,
                    _ => 400,
                };
                return refuse(
                    &mut client,
                    Reply::error(status, format!("bad request: {e}")),
                )
                .await;
            }
        };
        buf.drain(..head_len);
        let fwd = match admitted {
            Ok(f) => f,
            Err(r) => {
                // Refused before anything was forwarded. The body (if any) is
                // unread: the connection cannot continue.
                return refuse(&mut client, r).await;
            }
        };
        match exchange(cx, &mut client, &mut buf, fwd, started).await {
            Next::KeepAlive => {}
            Next::Close => {
                let _ = client.shutdown().await;
                return;
            }
        }
    }
}

/// Answers and closes (the session then ends): the write side first, then what the client still sends
/// is read and dropped for a moment, so the close does not reset the
/// connection (and discard the answer) before the client has read it.
async fn refuse<C: AsyncReadRent + AsyncWriteRent>(client: &mut C, r: Reply) {
    if reply(client, r.closing()).await.is_ok() && client.shutdown().await.is_ok() {
        linger(client).await;
    }
}

async fn reply<C: AsyncWriteRent>(client: &mut C, r: Reply) -> std::io::Result<()> {
    client.write_all(r.bytes()).await.0.map(|_| ())
}

/// Checks a request head and builds the upstream head; `Err` is the answer.
async fn admit(cx: &Context<'_>, req: &http::Request<'_, '_>) -> Result<Forward, Reply> {
    let framing =
        http::request_framing(req, cx.config.gateway.max_message as u64).map_err(|e| match e {
            http::FramingError::TooLarge(_) => Reply::failure(&Error::new(
                Kind::TooLarge,
                format!("request body too large: {e}"),
                "",
            )),
            e => Reply::failure(&Error::new(
                Kind::BadRequest,
                format!("bad request: {e}"),
                "",
            )),
        })?;
    if !req.target.starts_with('/') {
        return Err(Reply::error(
            400,
            "bad request: only origin-form request targets (`/path`) are accepted",
        ));
    }
    let path = req.path();
    if !canonical(path) {
        return Err(Reply::error(
            400,
            "bad request: the path is not canonical (`//`, `.` or `..` segments, or encoded `/`, `\\`, `.` are refused)",
        ));
    }
    if req.target.contains('#') {
        // A fragment never belongs in a request; a server that strips it
        // would run `/v1/export` where the rules saw `/v1/export#x`.
        return Err(Reply::error(
            400,
            "bad request: a request target cannot carry a fragment (`#`)",
        ));
    }
    // CGI, PHP-FPM and WSGI read `X_HTTP_Method_Override` as the same header.
    let same_header = |a: &str, name: &str| {
        a.len() == name.len()
            && a.bytes()
                .zip(name.bytes())
                .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
    };
    let has = |name: &str| req.headers.iter().any(|h| same_header(h.name, name));
    if let Some(h) = REWRITE_HEADERS.iter().find(|h| has(h)) {
        return Err(Reply::error(
            400,
            format!("bad request: `{h}` is not accepted (frameworks route on it; guardrails judge the request's own path)"),
        ));
    }
    // A method override: refused, or (`method_override = true`) judged as
    // the method it names.
    let mut overrides: Vec<Vec<u8>> = req
        .headers
        .iter()
        .filter(|h| METHOD_OVERRIDES.iter().any(|m| same_header(h.name, m)))
        .map(|h| h.value.trim_ascii().to_vec())
        .collect();
    let header_override = !overrides.is_empty();
    if let Some((_, query)) = req.target.split_once('?') {
        overrides.extend(form_override_values(query.as_bytes()));
    }
    let judged = match (overrides.first(), cx.target.method_override) {
        (None, _) => None,
        (Some(_), false) if header_override => {
            return Err(Reply::error(
                400,
                "bad request: method override headers are not accepted (guardrails judge the request's own method; a target may judge them with method_override = true)",
            ))
        }
        (Some(_), false) => {
            return Err(Reply::error(
                400,
                "bad request: `_method` in the query string is not accepted (frameworks run it as the method; guardrails judge the request's own method; a target may judge it with method_override = true)",
            ))
        }
        (Some(first), true) => {
            let valid = !first.is_empty()
                && first.len() <= 16
                && first.iter().all(u8::is_ascii_alphabetic);
            if !valid || overrides.iter().any(|o| !o.eq_ignore_ascii_case(first)) {
                return Err(Reply::error(
                    400,
                    "bad request: method overrides must name one method (letters only) and agree",
                ));
            }
            Some(String::from_utf8_lossy(first).to_ascii_uppercase())
        }
    };
    if req.header("upgrade").is_some() || req.method.eq_ignore_ascii_case("CONNECT") {
        return Err(Reply::error(
            501,
            "protocol upgrades and CONNECT are not allowed through Sluice",
        ));
    }
    if req.version == 1 && req.header("host").is_none() {
        return Err(Reply::error(
            400,
            "bad request: HTTP/1.1 needs a Host header",
        ));
    }
    let identity = authenticate(cx, req).await?;
    let generation = cx.shard.generation();
    let policy = &generation.policy;
    let t = policy
        .target_index(&cx.target.name)
        .ok_or_else(|| Reply::error(503, "target is no longer configured"))?;
    let groups = policy.groups(&identity.groups);
    if !policy.may_connect(t, groups) {
        info!(
            "access_denied",
            target = cx.target.name,
            subject = identity.subject,
            peer = cx.peer
        );
        record_denial(cx, &identity, req, "not in an access group", None);
        return Err(Reply::error(
            403,
            format!(
                "`{}` may not use target `{}`",
                identity.subject, cx.target.name
            ),
        ));
    }
    let Some(rule_path) = rule_path(path) else {
        return Err(Reply::error(
            400,
            "bad request: invalid percent-encoding in the path",
        ));
    };
    // With an override, both the request's own method and the one it names
    // are judged: the stricter decision holds (a framework may run either).
    let mut decision = policy.decide_http(t, req.method, &rule_path, groups);
    if let Some(m) = &judged {
        decision = stricter(decision, policy.decide_http(t, m, &rule_path, groups));
    }
    let method = judged.as_deref().unwrap_or(req.method);
    let hold = match decision {
        Decision::Allow => None,
        Decision::Deny { message, rule } => {
            info!(
                "request_denied",
                target = cx.target.name,
                subject = identity.subject,
                method = method,
                path = path,
                rule = rule + 1
            );
            record_denial(cx, &identity, req, &message, Some(rule));
            return Err(denied(&message, rule));
        }
        Decision::Approve { rule } => Some((rule, approval_spec(policy, t, rule)?)),
    };
    // Frameworks honour `_method` on POST only.
    let form = if req.method.eq_ignore_ascii_case("POST") && framing != Framing::None {
        form_kind(req).map_err(|e| Reply::error(400, format!("bad request: {e}")))?
    } else {
        None
    };
    // On a target that judges overrides, a form body is read whole before it
    // is judged: its `_method` is one more override.
    // Multipart and JSON bodies stream, scanned, and are refused if they
    // name an override.
    let form_rule_path = (cx.target.method_override && form == Some(Form::Urlencoded))
        .then(|| rule_path.into_owned());
    if form_rule_path.is_some() && matches!(framing, Framing::Length(n) if n > MAX_HELD_BODY) {
        return Err(Reply::failure(&Error::new(
            Kind::TooLarge,
            format!("an urlencoded form on a target that judges method overrides may carry at most {MAX_HELD_BODY} bytes (it is read whole for `_method` before it is judged)"),
            "",
        )));
    }
    if hold.is_some() && matches!(framing, Framing::Length(n) if n > MAX_HELD_BODY) {
        return Err(Reply::failure(&Error::new(
            Kind::TooLarge,
            format!("a request that needs approval may carry at most {MAX_HELD_BODY} bytes"),
            "",
        )));
    }
    let connection = req.header("connection").unwrap_or_default();
    let has = |token: &str| {
        connection
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    let keep_alive = if req.version == 1 {
        !has("close")
    } else {
        has("keep-alive")
    };
    let expect_continue = req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    Ok(Forward {
        method: req.method.to_owned(),
        judged: method.to_owned(),
        target: req.target.to_owned(),
        head: upstream_head(cx, req),
        framing,
        keep_alive,
        expect_continue,
        identity,
        hold,
        form,
        form_rule_path,
        overridden: judged.is_some(),
        http11: req.version == 1,
        justification: req
            .header("sluice-reason")
            .map(|v| String::from_utf8_lossy(v).into_owned()),
    })
}

/// The answer to a request a rule denies.
fn denied(message: &str, rule: u16) -> Reply {
    Reply::json(
        403,
        serde_json::json!({ "error": message, "rule": rule + 1 }),
    )
}

/// Who may approve under `rule`; a rule nobody can satisfy is a refusal.
fn approval_spec(
    policy: &sluice_config::policy::CompiledPolicy,
    t: usize,
    rule: u16,
) -> Result<std::sync::Arc<ApprovalSpec>, Reply> {
    policy.approval(t, rule).cloned().ok_or_else(|| {
        Reply::error(
            403,
            "this request needs approval, and nobody may approve it",
        )
    })
}

/// The stricter of two decisions (the later one on a tie). Two different
/// approval rules are refused: one approval must not stand in for another
/// rule's approvers or quorum.
fn stricter(a: Decision, b: Decision) -> Decision {
    if let (Decision::Approve { rule: x }, Decision::Approve { rule: y }) = (&a, &b) {
        if x != y {
            return Decision::Deny {
                message: format!(
                    "the request's own method and the override it names need different approvals (rules {} and {}); send it without the override",
                    x + 1,
                    y + 1
                )
                .into(),
                rule: *y,
            };
        }
    }
    let rank = |d: &Decision| match d {
        Decision::Allow => 0,
        Decision::Approve { .. } => 1,
        Decision::Deny { .. } => 2,
    };
    if rank(&b) >= rank(&a) {
        b
    } else {
        a
    }
}

async fn authenticate(
    cx: &Context<'_>,
    req: &http::Request<'_, '_>,
) -> Result<Rc<Identity>, Reply> {
    let unauthorized = |msg: String| Reply {
        extra: "www-authenticate: Bearer realm=\"sluice\"\r\n",
        ..Reply::error(401, msg)
    };
    let token = req
        .bearer_token()
        .ok_or_else(|| unauthorized("send Authorization: Bearer <token>".into()))?;
    // Keep-alive clients send the same token on every request: reuse the
    // identity until the token expires.
    if let Some((t, id)) = &cx.cache.borrow().identity {
        if t == token && crate::identity::unix_now() < id.expires_at {
            return Ok(id.clone());
        }
    }
    let verified = cx.shard.authenticate(token).await;
    if let Ok(id) = &verified {
        cx.cache.borrow_mut().identity = Some((token.to_owned(), id.clone()));
    }
    verified.map_err(|e| {
        info!(
            "auth_failed",
            target = cx.target.name,
            peer = cx.peer,
            error = e
        );
        if let Some(audit) = cx.shard.audit() {
            audit.note(|out| {
                AuthFailure {
                    target: &cx.target.name,
                    protocol: "http",
                    client: &cx.peer.to_string(),
                    reason: &e.to_string(),
                    startup_user: None,
                }
                .encode(out)
            });
        }
        unauthorized(e.to_string())
    })
}

/// The head that goes upstream (see [`rewrite::request_head`]).
fn upstream_head(cx: &Context<'_>, req: &http::Request<'_, '_>) -> Vec<u8> {
    let cred = cx.target.credentials.as_ref();
    rewrite::request_head(
        req,
        &rewrite::UpstreamHead {
            host: &cx.target.upstream,
            credential_header: cred.and_then(|c| c.header.as_deref()),
            credential_param: cred.and_then(|c| c.param.as_deref()),
            credential: cred.and_then(|c| c.value.as_ref()).map(|v| v.expose()),
            identity_encoding: reads_responses(cx.target),
            forwarded_for: &cx.peer_ip,
        },
    )
}

fn record_denial(
    cx: &Context<'_>,
    identity: &Identity,
    req: &http::Request<'_, '_>,
    reason: &str,
    rule: Option<u16>,
) {
    if let Some(audit) = cx.shard.audit() {
        let event = Command {
            text: Some(req.target.as_bytes()),
            reason: Some(reason),
            rule: rule.map(|r| r as u64 + 1),
            ..Command::new(
                &cx.session,
                &cx.target.name,
                &identity.subject,
                "http",
                Via::Method(req.method),
                "deny",
            )
        };
        audit.note(|out| event.encode(out));
    }
}

/// How relaying a response went.
struct Relayed {
    /// A reused upstream connection failed before any response byte: the
    /// request may be sent again on a fresh one (nothing reached the client).
    retry: bool,
    status: u16,
    bytes: u64,
    masked: Vec<(&'static str, u64)>,
    error: Option<String>,
    upstream_reusable: bool,
    client_ok: bool,
}

impl Relayed {
    fn failed(error: String) -> Relayed {
        Relayed {
            status: 502,
            bytes: 0,
            masked: Vec::new(),
            error: Some(error),
            upstream_reusable: false,
            client_ok: false,
            retry: false,
        }
    }
}
