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
use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use sluice_config::policy::{ApprovalSpec, Decision};
use sluice_config::{ApprovalMode, Config, Target, UpstreamTls};
use sluice_masking::json::{mask_escaped_runs, mask_json, FieldRules};
use sluice_masking::{Entity, EventMasker, Events, Masker, Profile, StreamMasker};
use sluice_protocols::http::{self, ChunkedDecoder, Framing, Header};
use sluice_protocols::Status;

use crate::approvals::{Key, NewRequest, Waited};
use crate::audit::{now_ms, Rec};
use crate::gateway::postgres::io::{linger, read_more_timeout, write_range};
use crate::identity::Identity;
use crate::metrics::ErrorKind;
use crate::runtime::Shard;
use crate::{debug, info, warn};

const MAX_HEAD: usize = 32 * 1024;
const MAX_HEADERS: usize = 100;
/// How long an idle keep-alive connection waits for its next request.
const IDLE: Duration = Duration::from_secs(60);
/// How long a started request or response may stall between reads.
const STALL: Duration = Duration::from_secs(30);
/// Idle upstream connections kept per target and shard.
const POOL_PER_TARGET: usize = 64;
/// How long after its last response a client's own upstream connection is
/// reused for a replayable request of the same caller without checking it
/// first. Bytes the upstream sends unasked within this window reach that same
/// caller only (as a 502 or a masked answer): such a connection is never pooled,
/// and pooled connections, shared by callers, are always checked.
const FRESH: Duration = Duration::from_secs(1);
/// Longest request body held whole (an approval is bound to the body).
const MAX_HELD_BODY: u64 = 1 << 20;

/// An upstream connection, plain or TLS.
enum Up {
    Plain(TcpStream),
    Tls(Box<monoio_rustls::ClientTlsStream<TcpStream>>, RawFd),
}

impl Up {
    /// An idle connection that must not carry another request: the upstream
    /// closed or reset it, or sent bytes nobody asked for (a late body, a second
    /// response), which would otherwise be read as the next caller's answer.
    fn closed(&self) -> bool {
        let fd = match self {
            Up::Plain(s) => s.as_raw_fd(),
            Up::Tls(_, fd) => *fd,
        };
        super::poll_now(fd, libc::POLLIN | libc::POLLRDHUP) != 0
    }
}

impl AsyncReadRent for Up {
    async fn read<T: monoio::buf::IoBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Up::Plain(s) => s.read(buf).await,
            Up::Tls(s, _) => s.read(buf).await,
        }
    }

    async fn readv<T: monoio::buf::IoVecBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Up::Plain(s) => s.readv(buf).await,
            Up::Tls(s, _) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Up {
    async fn write<T: monoio::buf::IoBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Up::Plain(s) => s.write(buf).await,
            Up::Tls(s, _) => s.write(buf).await,
        }
    }

    async fn writev<T: monoio::buf::IoVecBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Up::Plain(s) => s.writev(buf).await,
            Up::Tls(s, _) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Up::Plain(s) => s.flush().await,
            Up::Tls(s, _) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Up::Plain(s) => s.shutdown().await,
            Up::Tls(s, _) => s.shutdown().await,
        }
    }
}

thread_local! {
    /// This shard's idle upstream connections, by target name.
    static POOL: RefCell<HashMap<String, Vec<Up>>> = RefCell::new(HashMap::new());
}

/// What a session knows once a request's caller is known.
struct Ctx<'a> {
    shard: &'a Shard,
    index: usize,
    target: &'a Target,
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
    masking: Option<Rc<MaskSetup>>,
    /// A JSON masker kept between responses (its counts reset each time).
    json_masker: Option<Masker>,
    /// The masker for response header values, kept the same way.
    head_masker: Option<Masker>,
    ubuf: Vec<u8>,
    /// The upstream connection this client used last: kept for its next
    /// request, handed to the shard's pool when the client leaves.
    up: Option<(Up, Instant, Rc<Identity>)>,
    /// That connection was once reused without the liveness check: if the
    /// upstream ever sent bytes unasked on it, its answers may be one behind,
    /// so it never goes to the shard's pool (other callers).
    up_unchecked: bool,
}

pub async fn serve(
    shard: &Shard,
    index: usize,
    target: &Target,
    config: &Config,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let mut sid = [0u8; 8];
    getrandom::fill(&mut sid).expect("the OS random source is available");
    let cx = Ctx {
        shard,
        index,
        target,
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
    if let Some(stream) = super::tls::accept(shard, target, tcp, peer, STALL).await {
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
    judge_form: Option<String>,
    /// The client speaks HTTP/1.1 (may be answered chunked).
    http11: bool,
    /// The method the rules judged (an override's, when the target judges
    /// overrides): what approvals bind and records say.
    judged: String,
}

async fn session<C: AsyncReadRent + AsyncWriteRent>(cx: &Ctx<'_>, mut client: C) {
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
async fn admit(cx: &Ctx<'_>, req: &http::Request<'_, '_>) -> Result<Forward, Reply> {
    let framing =
        http::request_framing(req, cx.config.gateway.max_message as u64).map_err(|e| match e {
            http::FramingError::TooLarge(_) => {
                Reply::error(413, format!("request body too large: {e}"))
            }
            e => Reply::error(400, format!("bad request: {e}")),
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
    let policy = cx.shard.policy();
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
            return Err(Reply::json(
                403,
                serde_json::json!({ "error": &*message, "rule": rule + 1 }),
            ));
        }
        Decision::Approve { rule } => {
            let spec = policy.approval(t, rule).cloned().ok_or_else(|| {
                Reply::error(
                    403,
                    "this request needs approval, and nobody may approve it",
                )
            })?;
            Some((rule, spec))
        }
    };
    // Frameworks honour `_method` on POST only.
    let form = if req.method.eq_ignore_ascii_case("POST") && framing != Framing::None {
        form_kind(req).map_err(|e| Reply::error(400, format!("bad request: {e}")))?
    } else {
        None
    };
    // On a target that judges overrides, a form body is read whole before it
    // is judged: its `_method` is one more override.
    let judge_form = (cx.target.method_override && form.is_some()).then(|| rule_path.into_owned());
    if judge_form.is_some() && matches!(framing, Framing::Length(n) if n > MAX_HELD_BODY) {
        return Err(Reply::error(
            413,
            format!("a form body on a target that judges method overrides may carry at most {MAX_HELD_BODY} bytes (it is read whole for `_method` before it is judged)"),
        ));
    }
    if hold.is_some() && matches!(framing, Framing::Length(n) if n > MAX_HELD_BODY) {
        return Err(Reply::error(
            413,
            format!("a request that needs approval may carry at most {MAX_HELD_BODY} bytes"),
        ));
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
        judge_form,
        http11: req.version == 1,
    })
}

/// The stricter of two decisions (the later one on a tie).
fn stricter(a: Decision, b: Decision) -> Decision {
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

/// A path without `//`, `.`/`..` segments, backslashes or encoded `/ \ .`,
/// so rules match what the upstream will resolve.
fn canonical(path: &str) -> bool {
    let p = path.as_bytes();
    let encoded_bad = memchr::memchr_iter(b'%', p).any(|i| {
        let code = p.get(i + 1..i + 3).unwrap_or_default();
        [&b"2f"[..], b"5c", b"2e", b"00"]
            .iter()
            .any(|c| code.eq_ignore_ascii_case(c))
    });
    !encoded_bad
        && memchr::memmem::find(p, b"//").is_none()
        && memchr::memchr(b'\\', p).is_none()
        && !path.split('/').any(|s| s == "." || s == "..")
}

/// The path as rules see it: percent-decoded and without `;parameters` in any
/// segment (servers that honour either would otherwise resolve a path no rule
/// matched). `None` for a malformed escape.
fn rule_path(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !path.contains(['%', ';']) {
        return Some(std::borrow::Cow::Borrowed(path));
    }
    let b = path.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            decoded.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    let stripped: Vec<&str> = decoded
        .split('/')
        .map(|seg| seg.split(';').next().unwrap_or_default())
        .collect();
    // What decoding and stripping revealed must be as canonical as the raw
    // path: no `.`/`..` and no empty segment (but the leading and a trailing one).
    let last = stripped.len() - 1;
    if stripped
        .iter()
        .enumerate()
        .any(|(i, s)| *s == "." || *s == ".." || (s.is_empty() && i != 0 && i != last))
    {
        return None;
    }
    Some(std::borrow::Cow::Owned(stripped.join("/")))
}

async fn authenticate(cx: &Ctx<'_>, req: &http::Request<'_, '_>) -> Result<Rc<Identity>, Reply> {
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
                Rec::begin(out, "auth_failure", now_ms())
                    .str("target", &cx.target.name)
                    .str("protocol", "http")
                    .str("peer", &cx.peer.to_string())
                    .str("error", &e.to_string())
                    .end()
            });
        }
        unauthorized(e.to_string())
    })
}

/// Headers never forwarded: hop-by-hop ones, the caller's token, and what the
/// gateway sets itself.
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "host",
    "authorization",
    "content-length",
    "transfer-encoding",
    // The gateway says who the client is.
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
];

/// Headers that make IIS, Symfony, Laravel and similar route to another path
/// than the request's own: refused, as the path is what the rules judged.
const REWRITE_HEADERS: &[&str] = &[
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-override-url",
    "x-forwarded-uri",
    "x-forwarded-path",
];

/// Does the query string carry a method override (`_method=DELETE`, also
/// percent-encoded as `%5Fmethod`, any case), which Rails, Laravel and
/// Express's method-override run as the request's method?
#[cfg(test)]
fn query_overrides_method(target: &str) -> bool {
    target
        .split_once('?')
        .is_some_and(|(_, query)| form_overrides_method(query.as_bytes()))
}

/// Does a form (`a=1&b=2`, a query string or an urlencoded body) name a
/// method override?
#[cfg(test)]
fn form_overrides_method(form: &[u8]) -> bool {
    !form_override_values(form).is_empty()
}

/// The values of the method overrides a form (a query string) names.
fn form_override_values(form: &[u8]) -> Vec<Vec<u8>> {
    form.split(|&b| b == b'&' || b == b';')
        .filter_map(|pair| {
            let mut parts = pair.splitn(2, |&b| b == b'=');
            let name = parts.next().unwrap_or_default();
            overrides_name(&percent_decode_form(name))
                .then(|| percent_decode_form(parts.next().unwrap_or_default()))
        })
        .collect()
}

/// A form name as a framework decodes it (`%5Fmethod`, `_%6Dethod`, `+`).
fn percent_decode_form(name: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let hex = name
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (name[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'+', _) => {
                decoded.push(b' ');
                i += 1;
            }
            (b'%', Some(b)) => {
                decoded.push(b);
                i += 3;
            }
            (b, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    decoded
}

/// Is this decoded field name `_method` as any of the frameworks that honour
/// it reads it: leading spaces and brackets dropped (PHP, Rack 2, qs), cut at
/// a bracket (an array: `_method[]`), NUL or whitespace (PHP's multipart
/// names), and `.` read as `_` (PHP: `.method`). Refusing a name one of them
/// reads differently is the safe side.
fn overrides_name(decoded: &[u8]) -> bool {
    // Rack and qs: leading brackets dropped, the name cut at the first bracket.
    let dropped = {
        let start = decoded
            .iter()
            .position(|&b| !matches!(b, b' ' | b'[' | b']'))
            .unwrap_or(decoded.len());
        decoded[start..].to_vec()
    };
    // PHP: a `[` with no `]` after it reads as `_` (`[method`).
    let php: Vec<u8> = {
        let start = decoded
            .iter()
            .position(|&b| b != b' ')
            .unwrap_or(decoded.len());
        let rest = &decoded[start..];
        let last_close = rest.iter().rposition(|&b| b == b']');
        let closed = |i: usize| last_close.is_some_and(|c| c > i);
        rest.iter()
            .enumerate()
            .map(|(i, &b)| if b == b'[' && !closed(i) { b'_' } else { b })
            .collect()
    };
    [dropped, php].iter().any(|name| {
        let end = name
            .iter()
            .position(|&b| matches!(b, b'[' | b']' | 0) || b.is_ascii_whitespace())
            .unwrap_or(name.len());
        let name = &name[..end];
        name.len() == 7
            && name.iter().zip(b"_method").all(|(&a, &b)| {
                (if a == b'.' {
                    b'_'
                } else {
                    a.to_ascii_lowercase()
                }) == b
            })
    })
}

/// A request body frameworks read form fields from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    Urlencoded,
    /// With its boundary.
    Multipart(Vec<u8>),
}

/// Whether the body may be read as a form, as the laxest framework reads its
/// `Content-Type` (the media type before any `;`, `,` or space; none at all is
/// a form to Rack). `Err`: a body Sluice cannot scan.
fn form_kind(req: &http::Request<'_, '_>) -> Result<Option<Form>, &'static str> {
    let mut types = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-type"));
    let value = types.next().map(|h| h.value).unwrap_or_default();
    if types.next().is_some() {
        return Err("two Content-Type headers are not accepted");
    }
    let value = value.trim_ascii();
    let media_end = value
        .iter()
        .position(|&b| matches!(b, b';' | b',') || b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let media = &value[..media_end];
    let form =
        if media.is_empty() || media.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
            Some(Form::Urlencoded)
        } else if media.len() > 10 && media[..10].eq_ignore_ascii_case(b"multipart/") {
            // Rack reads `multipart/mixed` and kin as forms too. Frameworks
            // find the boundary differently (first, last, inside another
            // word): one plain `boundary` parameter is the only unambiguous one.
            let mentions = value
                .windows(8)
                .filter(|w| w.eq_ignore_ascii_case(b"boundary"))
                .count();
            let plain = |b: &Vec<u8>| {
                !b.is_empty()
                    && b.len() <= 200
                    && mentions == 1
                    && !b
                        .iter()
                        .any(|&c| matches!(c, b';' | b',' | b'"') || c.is_ascii_whitespace())
            };
            let boundary = parameter(value, b"boundary")
                .filter(plain)
                .ok_or("a multipart body needs one plain boundary of 1 to 200 bytes")?;
            Some(Form::Multipart(boundary))
        } else {
            None
        };
    // A compressed form would be read by the framework and not by Sluice.
    let encoded = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("content-encoding")
            && !h.value.trim_ascii().eq_ignore_ascii_case(b"identity")
    });
    if form.is_some() && encoded {
        return Err("a compressed form body (or one without a Content-Type) is not accepted: Sluice reads forms for `_method`");
    }
    Ok(form)
}

/// A parameter's value in a header value (`; boundary="x"`), unquoted.
fn parameter(value: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let mut i = 0;
    while i + name.len() < value.len() {
        let at = value[i..i + name.len()].eq_ignore_ascii_case(name)
            && value[i + name.len()] == b'='
            && (i == 0 || matches!(value[i - 1], b';' | b' ' | b'\t' | b','));
        if !at {
            i += 1;
            continue;
        }
        let v = &value[i + name.len() + 1..];
        return Some(if let Some(q) = v.strip_prefix(b"\"") {
            q.iter().take_while(|&&b| b != b'"').copied().collect()
        } else {
            v.iter()
                .take_while(|&&b| !matches!(b, b';' | b',') && !b.is_ascii_whitespace())
                .copied()
                .collect()
        });
    }
    None
}

const FORM_OVERRIDE: &str = "`_method` in a form body is not accepted (frameworks run it as the method; guardrails judge the request's own method)";

/// Looks for a method override in a form body as it streams.
enum FormScan {
    Urlencoded(UrlencodedScan),
    Multipart(MultipartScan),
}

impl FormScan {
    fn new(form: &Form) -> FormScan {
        match form {
            Form::Urlencoded => FormScan::Urlencoded(UrlencodedScan::default()),
            Form::Multipart(boundary) => FormScan::Multipart(MultipartScan::new(boundary)),
        }
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), &'static str> {
        match self {
            FormScan::Urlencoded(s) => s.feed(data),
            FormScan::Multipart(s) => s.feed(data),
        }
    }

    /// The body ended: its last field counts too.
    fn finish(&mut self) -> Result<(), &'static str> {
        match self {
            FormScan::Urlencoded(s) => s.end_name(),
            FormScan::Multipart(s) => s.finish(),
        }
    }
}

/// An urlencoded body, field name by field name, in bounded memory: only the
/// first bytes after a name's leading spaces can make it `_method`.
#[derive(Default)]
struct UrlencodedScan {
    /// The current name's first bytes (decoded, leading spaces dropped).
    name: Vec<u8>,
    /// Inside a value (after `=`): skipped up to `&` or `;`.
    in_value: bool,
    /// A `%` and the hex digits after it so far.
    escape: Vec<u8>,
    /// The name began with `[` (PHP reads a lone `[` as `_`).
    bracket: bool,
}

impl UrlencodedScan {
    /// Bytes of a name that decide it (`_method` and one more).
    const KEEP: usize = 8;

    fn feed(&mut self, data: &[u8]) -> Result<(), &'static str> {
        for &b in data {
            match b {
                b'&' | b';' => {
                    self.end_name()?;
                    continue;
                }
                _ if self.in_value => continue,
                b'=' => {
                    self.end_name()?;
                    self.in_value = true;
                    continue;
                }
                _ => {}
            }
            let decoded = if !self.escape.is_empty() || b == b'%' {
                self.escape.push(b);
                if self.escape.len() < 3 {
                    continue;
                }
                let hex = std::str::from_utf8(&self.escape[1..]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        self.escape.clear();
                        v
                    }
                    // Not an escape: the bytes stand for themselves.
                    None => {
                        let raw = std::mem::take(&mut self.escape);
                        for r in raw {
                            self.push(r);
                        }
                        continue;
                    }
                }
            } else if b == b'+' {
                b' '
            } else {
                b
            };
            self.push(decoded);
        }
        Ok(())
    }

    fn push(&mut self, b: u8) {
        // The leading run of spaces and brackets is dropped (Rack, qs, PHP),
        // so it cannot push the name's deciding bytes out of what is kept.
        if self.name.is_empty() && matches!(b, b' ' | b'[' | b']') {
            self.bracket |= b == b'[';
            return;
        }
        if self.name.len() < Self::KEEP {
            self.name.push(b);
        }
    }

    /// A name ended (at `=`, `&`, `;` or the body's end).
    fn end_name(&mut self) -> Result<(), &'static str> {
        let pending = std::mem::take(&mut self.escape);
        for r in pending {
            self.push(r);
        }
        let found = !self.in_value
            && (overrides_name(&self.name)
                || (self.bracket && overrides_name(&[&b"["[..], &self.name].concat())));
        self.name.clear();
        self.in_value = false;
        self.bracket = false;
        if found {
            return Err(FORM_OVERRIDE);
        }
        Ok(())
    }
}

/// Reads a multipart body's part headers as it streams (the boundary from
/// `Content-Type`, each part's header block whole, at most 8 KiB), and looks
/// at each part's name. Parsers differ (PHP takes bare LF line ends and
/// folds lines without a colon into the one before; Rack 2 finds `name=` by a
/// regex across the block; parts after the closing delimiter still count to
/// PHP), so the reading is the union: delimiters at `LF--boundary`, header
/// blocks ending at an empty line with or without CR, the body read to its
/// end, and every `name=` / `name*=` anywhere in a header block, quoted with
/// `"` or `'` and backslash escapes, bare, or RFC 2231, plus `Content-ID` (a
/// name to Rack 2). Part data is skipped, never read as headers. Memory stays
/// bounded: the delimiter's length, or one header block.
struct MultipartScan {
    /// `LF--boundary`.
    delimiter: Vec<u8>,
    state: Part,
    buf: Vec<u8>,
    /// How much of `buf` has been searched for the end of a header block.
    searched: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Looking for the next delimiter (in the preamble, a part's data, or
    /// after a closing delimiter).
    Seeking,
    /// After a delimiter: the rest of its line.
    AfterDelimiter,
    Headers,
}

impl MultipartScan {
    const MAX_HEADERS: usize = 8 * 1024;

    fn new(boundary: &[u8]) -> Self {
        MultipartScan {
            delimiter: [&b"\n--"[..], boundary].concat(),
            state: Part::Seeking,
            // The first delimiter may open the body without a line end before it.
            buf: b"\n".to_vec(),
            searched: 0,
        }
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), &'static str> {
        self.buf.extend_from_slice(data);
        loop {
            match self.state {
                Part::Seeking => match memchr::memmem::find(&self.buf, &self.delimiter) {
                    Some(at) => {
                        self.buf.drain(..at + self.delimiter.len());
                        self.state = Part::AfterDelimiter;
                    }
                    None => {
                        let keep = self.delimiter.len() - 1;
                        let cut = self.buf.len().saturating_sub(keep);
                        self.buf.drain(..cut);
                        return Ok(());
                    }
                },
                // `--` (a closing delimiter) or padding, then the line end;
                // a part may still follow (PHP reads past a closing one).
                Part::AfterDelimiter => match memchr::memchr(b'\n', &self.buf) {
                    Some(at) => {
                        let closing = self.buf.starts_with(b"--");
                        self.buf.drain(..at + 1);
                        if closing {
                            self.buf.splice(0..0, *b"\n");
                            self.state = Part::Seeking;
                        } else {
                            self.state = Part::Headers;
                            self.searched = 0;
                        }
                    }
                    None if self.buf.len() > 256 => {
                        return Err("a multipart delimiter line is malformed")
                    }
                    None => return Ok(()),
                },
                Part::Headers => {
                    let end = if self.buf.starts_with(b"\r\n") {
                        Some((0, 2))
                    } else if self.buf.starts_with(b"\n") {
                        Some((0, 1))
                    } else {
                        // An empty line, with or without CR.
                        let from = self.searched.saturating_sub(2);
                        let lf = memchr::memmem::find(&self.buf[from..], b"\n\n")
                            .map(|at| (from + at + 1, from + at + 2));
                        let crlf = memchr::memmem::find(&self.buf[from..], b"\n\r\n")
                            .map(|at| (from + at + 1, from + at + 3));
                        match (lf, crlf) {
                            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
                            (a, b) => a.or(b),
                        }
                    };
                    match end {
                        Some((at, skip)) => {
                            part_names_override(&self.buf[..at])?;
                            self.buf.drain(..skip);
                            // The data starts here; its delimiter brings its
                            // own line end, which an empty part shares.
                            self.buf.splice(0..0, *b"\n");
                            self.state = Part::Seeking;
                        }
                        None if self.buf.len() > Self::MAX_HEADERS => {
                            return Err("a multipart part's headers over 8 KiB are not accepted")
                        }
                        None => {
                            self.searched = self.buf.len();
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// The body ended inside a part's headers: they count as they are.
    fn finish(&mut self) -> Result<(), &'static str> {
        if self.state == Part::Headers {
            part_names_override(&self.buf)?;
        }
        Ok(())
    }
}

/// Whether one part's header block names a method override: any `name=` or
/// `name*=` parameter anywhere in it (across folded lines, inside any header,
/// as Rack 2 finds it), and `Content-ID`.
fn part_names_override(headers: &[u8]) -> Result<(), &'static str> {
    for line in headers.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-id") && overrides_name(value) {
                return Err(FORM_OVERRIDE);
            }
        }
    }
    // Every `name` parameter, whatever header or line it is on: the block
    // read as one run of parameters, after each `;`, `:` or line end.
    let flat: Vec<u8> = headers
        .iter()
        .map(|&b| {
            if matches!(b, b'\r' | b'\n' | b':') {
                b';'
            } else {
                b
            }
        })
        .collect();
    for (key, v) in disposition_params(&flat) {
        let decoded = if key.eq_ignore_ascii_case(b"name*") {
            // charset'language'percent-encoded
            let raw = v.rsplit(|&b| b == b'\'').next().unwrap_or(&v);
            percent_decode_form(raw)
        } else if key.eq_ignore_ascii_case(b"name") {
            v
        } else {
            continue;
        };
        if overrides_name(&decoded) {
            return Err(FORM_OVERRIDE);
        }
    }
    Ok(())
}

/// The `key=value` parameters of a `Content-Disposition` value, with quoted
/// values (`"..."` or `'...'`) unescaped (`\x` is `x`).
fn disposition_params(value: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < value.len() {
        // The key.
        while i < value.len() && (value[i] == b';' || value[i].is_ascii_whitespace()) {
            i += 1;
        }
        let k0 = i;
        while i < value.len() && !matches!(value[i], b'=' | b';') {
            i += 1;
        }
        let key = value[k0..i].trim_ascii().to_vec();
        if i >= value.len() || value[i] == b';' {
            continue;
        }
        i += 1; // '='
        while i < value.len() && value[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut v = Vec::new();
        match value.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                i += 1;
                while i < value.len() && value[i] != q {
                    if value[i] == b'\\' && i + 1 < value.len() {
                        i += 1;
                    }
                    v.push(value[i]);
                    i += 1;
                }
                i += 1;
            }
            _ => {
                while i < value.len() && value[i] != b';' {
                    v.push(value[i]);
                    i += 1;
                }
            }
        }
        out.push((key, v));
    }
    out
}

/// Headers that would make the upstream run another method than the one the
/// rules judged: refused.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The head that goes upstream: same method and target (plus an injected
/// credential parameter), the client's end-to-end headers, the gateway's own.
fn upstream_head(cx: &Ctx<'_>, req: &http::Request<'_, '_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    let cred = cx.target.credentials.as_ref();
    if let (Some(param), Some(value)) = (
        cred.and_then(|c| c.param.as_deref()),
        cred.and_then(|c| c.value.as_ref()),
    ) {
        out.push(if req.target.contains('?') { b'&' } else { b'?' });
        out.extend_from_slice(param.as_bytes());
        out.push(b'=');
        percent_encode(value.expose().as_bytes(), &mut out);
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(cx.target.upstream.as_bytes());
    out.extend_from_slice(b"\r\n");
    // A header the Connection header names is hop-by-hop too.
    let connection = req.header("connection").unwrap_or_default();
    let named = |name: &str| {
        connection
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    };
    // Masking, or keeping the credential from flowing back, reads the body
    // as text: no content coding, no partial ranges.
    let masking = reads_responses(cx.target);
    for h in req.headers {
        if DROPPED.iter().any(|d| d.eq_ignore_ascii_case(h.name))
            || named(h.name)
            || (masking
                && ["accept-encoding", "range", "if-range"]
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(h.name)))
            || cred
                .and_then(|c| c.header.as_deref())
                .is_some_and(|c| c.eq_ignore_ascii_case(h.name))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if let (Some(header), Some(value)) = (
        cred.and_then(|c| c.header.as_deref()),
        cred.and_then(|c| c.value.as_ref()),
    ) {
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.expose().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if masking {
        // Masking needs the body as text: ask for no content coding.
        out.extend_from_slice(b"accept-encoding: identity\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    out.extend_from_slice(cx.peer_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    // Framing lines are added per request (`finish_head`).
    out
}

fn percent_encode(v: &[u8], out: &mut Vec<u8>) {
    for &b in v {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

fn finish_head(head: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            let _ = write!(head, "content-length: {n}\r\n");
        }
        Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
    head.extend_from_slice(b"\r\n");
}

fn record_denial(
    cx: &Ctx<'_>,
    identity: &Identity,
    req: &http::Request<'_, '_>,
    reason: &str,
    rule: Option<u16>,
) {
    if let Some(audit) = cx.shard.audit() {
        audit.note(|out| {
            let rec = Rec::begin(out, "command", now_ms())
                .str("session", &cx.session)
                .str("target", &cx.target.name)
                .str("subject", &identity.subject)
                .str("protocol", "http")
                .str("method", req.method)
                .text("text", req.target.as_bytes())
                .str("decision", "deny")
                .str("reason", reason);
            match rule {
                Some(r) => rec.num("rule", r as u64 + 1).end(),
                None => rec.end(),
            }
        });
    }
}

enum Next {
    KeepAlive,
    Close,
}

/// Forwards one admitted request and relays its response.
async fn exchange<C: AsyncReadRent + AsyncWriteRent>(
    cx: &Ctx<'_>,
    client: &mut C,
    buf: &mut Vec<u8>,
    mut fwd: Forward,
    started: Instant,
) -> Next {
    super::bench_slowdown();
    if fwd.expect_continue {
        // Everything about the request checked out: ask for the body now.
        if client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await
            .0
            .is_err()
        {
            return Next::Close;
        }
    }
    // A request that needs approval is read whole first: the approval is bound
    // to its method, target and body.
    let mut held_body: Option<Vec<u8>> = None;
    let mut approval = None;
    if let Some(rule_path) = fwd.judge_form.take() {
        let body = match read_whole_body(client, buf, fwd.framing, MAX_HELD_BODY).await {
            Ok(b) => b,
            Err(r) => {
                refuse(client, r).await;
                return Next::Close;
            }
        };
        if let Err(r) = judge_form_override(cx, &mut fwd, &body, &rule_path) {
            if r.status == 403 {
                let said: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                record(cx, &fwd, "deny", None, said["error"].as_str()).await;
            }
            return if reply(client, r).await.is_ok() && fwd.keep_alive {
                Next::KeepAlive
            } else {
                Next::Close
            };
        }
        fwd.framing = if body.is_empty() {
            Framing::None
        } else {
            Framing::Length(body.len() as u64)
        };
        fwd.form = None;
        held_body = Some(body);
    }
    if let Some((rule, spec)) = fwd.hold.take() {
        let body = match held_body.take() {
            Some(b) => b,
            None => match read_whole_body(client, buf, fwd.framing, MAX_HELD_BODY).await {
                Ok(b) => b,
                Err(r) => {
                    refuse(client, r).await;
                    return Next::Close;
                }
            },
        };
        match hold(cx, &fwd, &body, rule, &spec).await {
            Held::Approved(id) => approval = Some(id),
            Held::Answer(r) => {
                let decision = if r.status == 202 { "approve" } else { "deny" };
                // The record says what the client was told, in words, and
                // which approval it was about.
                let said: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                let reason = said["error"].as_str().or(said["message"].as_str());
                record(cx, &fwd, decision, said["approval"].as_u64(), reason).await;
                return if reply(client, r).await.is_ok() && fwd.keep_alive {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
            }
            Held::Gone => return Next::Close,
        }
        fwd.framing = if body.is_empty() {
            Framing::None
        } else {
            Framing::Length(body.len() as u64)
        };
        held_body = Some(body);
    }
    // A method override in a form body: refused like one in the query. Form
    // bodies are scanned as they stream (a held one whole, here).
    let mut scan = fwd.form.as_ref().map(FormScan::new);
    if let (Some(sc), Some(body)) = (scan.as_mut(), &held_body) {
        if let Err(why) = sc.feed(body).and_then(|()| sc.finish()) {
            refuse(client, Reply::error(400, format!("bad request: {why}"))).await;
            return Next::Close;
        }
    }
    if !record(cx, &fwd, "allow", approval, None).await {
        refuse(client, Reply::error(503, "request refused: the audit log cannot record it; Sluice runs nothing it cannot record")).await;
        return Next::Close;
    }
    finish_head(&mut fwd.head, fwd.framing);
    let mut head = std::mem::take(&mut fwd.head);
    // A pooled connection the upstream closed just as the request went out is
    // retried once on a fresh connection, when the request can be sent again
    // (no body, or a body held in memory) and nothing reached the client.
    // Only requests that are safe to repeat: GET, HEAD, OPTIONS without a body
    // (an approved request runs once, whatever happens).
    let replayable = fwd.framing == Framing::None
        && held_body.is_none()
        && approval.is_none()
        && ["GET", "HEAD", "OPTIONS"]
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&fwd.method));
    let mut attempt = 0;
    let (up, outcome) = loop {
        let (mut up, reused) = match checkout(cx, replayable && attempt == 0, &fwd.identity).await {
            Ok(u) => u,
            Err(e) => {
                cx.shard.metrics.error(ErrorKind::UpstreamConnect);
                warn!(
                    "upstream_connect_failed",
                    target = cx.target.name,
                    error = e
                );
                let r = Reply::error(502, format!("target `{}` is unreachable", cx.target.name));
                return if reply(client, r).await.is_ok()
                    && fwd.keep_alive
                    && fwd.framing == Framing::None
                {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
            }
        };
        let may_retry = reused && replayable && attempt == 0;
        attempt += 1;
        let (res, back) = up.write_all(head).await;
        head = back;
        let sent = match res {
            Err(_) => Err(BodyError::Upstream),
            Ok(_) => match held_body.take() {
                Some(body) => {
                    let (res, back) = up.write_all(body).await;
                    held_body = Some(back);
                    res.map(|_| ()).map_err(|_| BodyError::Upstream)
                }
                None => copy_body(client, buf, fwd.framing, &mut up, scan.as_mut()).await,
            },
        };
        match sent {
            Ok(()) => {}
            Err(BodyError::Upstream) if may_retry => continue,
            Err(BodyError::Client(r)) => {
                // The rest of the body may still be on its way.
                refuse(client, r).await;
                return Next::Close;
            }
            Err(BodyError::Upstream) => {
                cx.shard.metrics.error(ErrorKind::UpstreamIo);
                let _ = reply(
                    client,
                    Reply::error(
                        502,
                        format!("target `{}` closed the connection", cx.target.name),
                    )
                    .closing(),
                )
                .await;
                return Next::Close;
            }
        }
        let outcome = respond(cx, client, &mut up, &fwd, may_retry).await;
        if outcome.retry {
            debug!(
                "upstream_retry",
                target = cx.target.name,
                reason = "a reused connection closed"
            );
            continue;
        }
        break (up, outcome);
    };
    let m = cx.shard.metrics.target(cx.index);
    m.bytes_from_upstream
        .set(m.bytes_from_upstream.get().wrapping_add(outcome.bytes));
    let elapsed = started.elapsed();
    cx.shard.metrics.command_done(elapsed);
    if let Some(audit) = cx.shard.audit() {
        audit.note(|out| {
            let rec = Rec::begin(out, "result", now_ms())
                .str("session", &cx.session)
                .str("target", &cx.target.name)
                .str("subject", &fwd.identity.subject)
                .num("status", outcome.status as u64)
                .num("bytes", outcome.bytes)
                .num("duration_us", elapsed.as_micros() as u64)
                .counts("masked", &outcome.masked);
            match &outcome.error {
                Some(e) => rec.str("error", e).end(),
                None => rec.end(),
            }
        });
    }
    if outcome.upstream_reusable {
        checkin(cx, up, &fwd.identity);
    }
    if outcome.client_ok && fwd.keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// A form body's `_method` on a target that judges overrides: it must name
/// one method and agree with any header or query override; the stricter of
/// the decision so far and the named method's holds (a deny is answered,
/// an approval held like any other).
fn judge_form_override(
    cx: &Ctx<'_>,
    fwd: &mut Forward,
    body: &[u8],
    rule_path: &str,
) -> Result<(), Reply> {
    let values = match &fwd.form {
        Some(Form::Urlencoded) => form_override_values(body),
        Some(Form::Multipart(boundary)) => {
            let mut scan = MultipartScan::new(boundary);
            return scan
                .feed(body)
                .and_then(|()| scan.finish())
                .map_err(|_| Reply::error(400, "bad request: `_method` in a multipart body is not judged (parsers disagree on where its value ends); send it in the query string or an override header"));
        }
        None => return Ok(()),
    };
    let Some(first) = values.first() else {
        return Ok(());
    };
    let valid = !first.is_empty() && first.len() <= 16 && first.iter().all(u8::is_ascii_alphabetic);
    let agrees = |m: &[u8]| m.eq_ignore_ascii_case(first);
    let earlier_override = !fwd.judged.eq_ignore_ascii_case(&fwd.method);
    if !valid
        || !values.iter().all(|v| agrees(v))
        || (earlier_override && !agrees(fwd.judged.as_bytes()))
    {
        return Err(Reply::error(
            400,
            "bad request: method overrides must name one method (letters only) and agree",
        ));
    }
    let named = String::from_utf8_lossy(first).to_ascii_uppercase();
    let policy = cx.shard.policy();
    let t = policy
        .target_index(&cx.target.name)
        .ok_or_else(|| Reply::error(503, "target is no longer configured"))?;
    let groups = policy.groups(&fwd.identity.groups);
    let mut decision = policy.decide_http(t, &named, rule_path, groups);
    // What admit decided for the request's own method (and any override):
    // judged again so the stricter of both holds.
    decision = stricter(
        policy.decide_http(t, &fwd.judged, rule_path, groups),
        decision,
    );
    decision = stricter(
        policy.decide_http(t, &fwd.method, rule_path, groups),
        decision,
    );
    fwd.judged = named;
    match decision {
        Decision::Allow => Ok(()),
        Decision::Deny { message, rule } => {
            info!(
                "request_denied",
                target = cx.target.name,
                subject = fwd.identity.subject,
                method = fwd.judged,
                path = rule_path,
                rule = rule + 1
            );
            Err(Reply::json(
                403,
                serde_json::json!({ "error": &*message, "rule": rule + 1 }),
            ))
        }
        Decision::Approve { rule } => {
            let spec = policy.approval(t, rule).cloned().ok_or_else(|| {
                Reply::error(
                    403,
                    "this request needs approval, and nobody may approve it",
                )
            })?;
            fwd.hold = Some((rule, spec));
            Ok(())
        }
    }
}

/// Writes the command record; in strict durability waits for the disk. `false`
/// if it could not be recorded (the request must not run).
async fn record(
    cx: &Ctx<'_>,
    fwd: &Forward,
    decision: &str,
    approval: Option<u64>,
    reason: Option<&str>,
) -> bool {
    let Some(audit) = cx.shard.audit() else {
        return true;
    };
    let pushed = audit
        .push(|out| {
            let mut rec = Rec::begin(out, "command", now_ms())
                .str("session", &cx.session)
                .str("target", &cx.target.name)
                .str("subject", &fwd.identity.subject)
                .str("protocol", "http")
                .str("method", &fwd.judged)
                .text("text", fwd.target.as_bytes())
                .str("decision", decision);
            if let Some(id) = approval {
                rec = rec.num("approval", id);
            }
            match reason {
                Some(r) => rec.str("reason", r).end(),
                None => rec.end(),
            }
        })
        .await;
    match pushed {
        Ok(t) if decision == "allow" => audit.wait_durable(t).await.is_ok(),
        Ok(_) => true,
        Err(e) => {
            warn!(
                "audit_refused_commands",
                target = cx.target.name,
                reason = e
            );
            cx.shard.metrics.error(ErrorKind::Audit);
            false
        }
    }
}

enum Held {
    Approved(u64),
    Answer(Reply),
    Gone,
}

/// Opens (or uses) an approval for this exact request.
async fn hold(
    cx: &Ctx<'_>,
    fwd: &Forward,
    body: &[u8],
    _rule: u16,
    spec: &std::sync::Arc<ApprovalSpec>,
) -> Held {
    let approvals = &cx.shard.shared.approvals;
    let fields: [(&[u8], &[u8]); 3] = [
        (b"method", fwd.judged.as_bytes()),
        (b"target", fwd.target.as_bytes()),
        (b"body", body),
    ];
    let key = Key {
        requester: fwd.identity.subject.clone(),
        target: cx.target.name.clone(),
        hash: crate::approvals::key_hash(&fields, spec),
    };
    if let Some(r) = approvals.take_grant(&key) {
        return Held::Approved(r.id);
    }
    let wait = spec.mode == ApprovalMode::Wait;
    let what = format!("{} {} on {}", fwd.judged, fwd.target, cx.target.name);
    let shown = String::from_utf8_lossy(&body[..body.len().min(16 * 1024)]);
    let text = if shown.is_empty() {
        format!("{} {}", fwd.judged, fwd.target)
    } else {
        format!("{} {}\n\n{shown}", fwd.judged, fwd.target)
    };
    let opened = approvals.open(NewRequest {
        key,
        protocol: "http",
        summary: fwd.judged.clone(),
        text,
        params: Vec::new(),
        database: String::new(),
        session: cx.session.clone(),
        approvers: spec.approvers.clone(),
        quorum: spec.quorum,
        ttl_ms: spec.timeout.as_millis() as u64,
        grant_ttl_ms: spec.grant_ttl.as_millis() as u64,
        reuse: !wait,
    });
    let (request, _) = match opened {
        Ok(r) => r,
        Err(e) => {
            return Held::Answer(Reply::error(
                503,
                format!("{what} needs approval, and no request could be opened: {e}"),
            ))
        }
    };
    let id = request.id;
    info!(
        "approval_requested",
        approval = id,
        target = cx.target.name,
        subject = fwd.identity.subject,
        wait = wait
    );
    if !wait {
        return Held::Answer(Reply::json(
            202,
            serde_json::json!({
                "approval": id,
                "status": "pending",
                "message": format!("approval {id} requested for {what}; send the same request again once it is approved"),
                "approvers": &*request.approvers,
                "expires_at": request.expires_at,
            }),
        ));
    }
    let refused = |message: String| {
        Held::Answer(Reply::json(
            403,
            serde_json::json!({ "error": message, "approval": id }),
        ))
    };
    match approvals
        .wait(id, cx.fd, &cx.shard.stopping, || false)
        .await
    {
        Waited::Approved => Held::Approved(id),
        Waited::Denied { by, reason } => Held::Answer(Reply::json(
            403,
            serde_json::json!({ "error": format!("approval {id} for {what} was denied by {by}"), "reason": reason, "approval": id }),
        )),
        Waited::Expired => refused(format!(
            "approval {id} for {what} timed out after {}s without a decision",
            spec.timeout.as_secs()
        )),
        Waited::Closed(why) => refused(format!("approval {id} for {what} was {why}")),
        Waited::ShuttingDown | Waited::ClientCancelled => {
            refused(format!("approval {id} for {what} was cancelled"))
        }
        Waited::ClientGone => Held::Gone,
    }
}

enum BodyError {
    /// The client's body is malformed or too large: this answer, then close.
    Client(Reply),
    Upstream,
}

/// Reads a whole request body (decoding chunks) into memory.
async fn read_whole_body<C: AsyncReadRent>(
    client: &mut C,
    buf: &mut Vec<u8>,
    framing: Framing,
    max: u64,
) -> Result<Vec<u8>, Reply> {
    let mut body = Vec::new();
    match framing {
        Framing::None | Framing::UntilClose => {}
        Framing::Length(n) => {
            while (buf.len() as u64) < n {
                if !matches!(read_more_timeout(client, buf, STALL).await, Ok(k) if k > 0) {
                    return Err(Reply::error(400, "the request body ended early"));
                }
            }
            body.extend(buf.drain(..n as usize));
        }
        Framing::Chunked => {
            let mut d = ChunkedDecoder::new(max);
            loop {
                let r = d
                    .decode(buf)
                    .map_err(|e| Reply::error(400, format!("bad chunked body: {e}")))?;
                body.extend_from_slice(&buf[r.data.clone()]);
                buf.drain(..r.consumed);
                if r.done {
                    break;
                }
                if r.consumed == 0
                    && !matches!(read_more_timeout(client, buf, STALL).await, Ok(k) if k > 0)
                {
                    return Err(Reply::error(400, "the request body ended early"));
                }
            }
        }
    }
    Ok(body)
}

/// Streams a request body upstream as framed (chunked bytes pass as they are,
/// after the decoder has checked them).
async fn copy_body<C: AsyncReadRent, U: AsyncWriteRent>(
    client: &mut C,
    buf: &mut Vec<u8>,
    framing: Framing,
    up: &mut U,
    mut scan: Option<&mut FormScan>,
) -> Result<(), BodyError> {
    // What the scan refuses never reaches the upstream whole: the request is
    // cut short there (before its last bytes) and the connection closed.
    let mut look = |data: &[u8], last: bool| {
        let r: Option<Result<(), &'static str>> = scan.as_deref_mut().map(|s| {
            s.feed(data)?;
            if last {
                s.finish()?;
            }
            Ok(())
        });
        match r {
            Some(Err(why)) => Err(BodyError::Client(Reply::error(
                400,
                format!("bad request: {why}"),
            ))),
            _ => Ok(()),
        }
    };
    match framing {
        Framing::None | Framing::UntilClose => Ok(()),
        Framing::Length(mut left) => loop {
            let n = (buf.len() as u64).min(left) as usize;
            if n > 0 {
                look(&buf[..n], n as u64 == left)?;
                write_range(up, buf, 0..n)
                    .await
                    .map_err(|_| BodyError::Upstream)?;
                buf.drain(..n);
                left -= n as u64;
            }
            if left == 0 {
                return Ok(());
            }
            if !matches!(read_more_timeout(client, buf, STALL).await, Ok(k) if k > 0) {
                return Err(BodyError::Client(Reply::error(
                    400,
                    "the request body ended early",
                )));
            }
        },
        Framing::Chunked => {
            let mut d = ChunkedDecoder::new(u64::MAX);
            loop {
                let mut checked = 0;
                let done = loop {
                    let r = d.decode(&buf[checked..]).map_err(|e| {
                        BodyError::Client(Reply::error(400, format!("bad chunked body: {e}")))
                    })?;
                    look(&buf[checked + r.data.start..checked + r.data.end], r.done)?;
                    checked += r.consumed;
                    if r.done || r.consumed == 0 {
                        break r.done;
                    }
                };
                // Trailer fields could carry what the gateway strips from heads
                // (a token, a credential): refused, never forwarded.
                if d.has_trailers() {
                    return Err(BodyError::Client(Reply::error(
                        400,
                        "bad request: trailer fields in request bodies are not accepted",
                    )));
                }
                if checked > 0 {
                    write_range(up, buf, 0..checked)
                        .await
                        .map_err(|_| BodyError::Upstream)?;
                    buf.drain(..checked);
                }
                if done {
                    return Ok(());
                }
                if !matches!(read_more_timeout(client, buf, STALL).await, Ok(k) if k > 0) {
                    return Err(BodyError::Client(Reply::error(
                        400,
                        "the request body ended early",
                    )));
                }
            }
        }
    }
}

/// An upstream connection: a pooled one, or a new one (TLS if configured).
/// An upstream connection, and whether it was reused (a fresh one is not
/// retried).
async fn checkout(
    cx: &Ctx<'_>,
    replayable: bool,
    who: &Rc<Identity>,
) -> Result<(Up, bool), String> {
    // Idle connections the upstream has closed meanwhile are dropped, not used.
    // The one this client used a moment ago, for the same caller, skips that
    // check (a syscall) for a request that is retried anyway if the connection
    // turns out closed.
    let own = cx.cache.borrow_mut().up.take();
    if let Some((u, idle_since, last)) = own {
        if replayable && Rc::ptr_eq(&last, who) && idle_since.elapsed() < FRESH {
            cx.cache.borrow_mut().up_unchecked = true;
            return Ok((u, true));
        }
        if !u.closed() {
            return Ok((u, true));
        }
    }
    cx.cache.borrow_mut().up_unchecked = false;
    loop {
        let pooled = POOL.with(|p| p.borrow_mut().get_mut(&cx.target.name).and_then(Vec::pop));
        match pooled {
            Some(u) if u.closed() => continue,
            Some(u) => return Ok((u, true)),
            None => break,
        }
    }
    let tcp = match monoio::time::timeout(
        cx.config.gateway.connect_timeout,
        TcpStream::connect(cx.target.upstream.as_str()),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Err(_) => return Err("connect: timed out".into()),
    };
    let _ = tcp.set_nodelay(true);
    let fd = tcp.as_raw_fd();
    if cx.target.upstream_tls == UpstreamTls::Disable {
        return Ok((Up::Plain(tcp), false));
    }
    let config = cx
        .shard
        .shared
        .upstream_tls
        .get(&cx.target.name)
        .cloned()
        .ok_or("no upstream TLS configuration")?;
    let name = crate::gateway::tls::server_name(&cx.target.upstream)?;
    let s = monoio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("upstream TLS: {e}"))?;
    Ok((Up::Tls(Box::new(s), fd), false))
}

fn checkin(cx: &Ctx<'_>, up: Up, who: &Rc<Identity>) {
    cx.cache.borrow_mut().up = Some((up, Instant::now(), who.clone()));
}

/// The client left: its upstream connection goes to the shard's pool, unless
/// it was ever reused unchecked.
fn release(cx: &Ctx<'_>) {
    let mut cache = cx.cache.borrow_mut();
    let Some((up, _, _)) = cache.up.take() else {
        return;
    };
    if cache.up_unchecked {
        return;
    }
    drop(cache);
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.entry(cx.target.name.clone()).or_default();
        if list.len() < POOL_PER_TARGET {
            list.push(up);
        }
    });
}

/// How relaying a response went.
struct Outcome {
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

impl Outcome {
    fn failed(error: String) -> Outcome {
        Outcome {
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

/// How a response body is masked.
enum Masking {
    None,
    /// JSON: buffered whole, masked by field path and detectors, re-framed.
    Json(Masker, Rc<FieldRules>),
    /// Server-Sent Events and JSON lines: masked event by event, re-framed.
    Events(EventMasker, Rc<FieldRules>),
    /// Any other text: the streaming masker (same length).
    Stream(StreamMasker),
}

/// The target's masking profile and the injected credential's patterns,
/// compiled once per session.
struct MaskSetup {
    /// The masking profile (plus the credential); `None` without masking.
    profile: Option<Profile>,
    rules: Rc<FieldRules>,
    /// The injected credential only: for bodies masking does not read (images,
    /// ...) and targets without masking.
    secrets: Option<Profile>,
}

impl MaskSetup {
    /// What a response head is masked with: the profile, else the credential.
    fn any(&self) -> Option<&Profile> {
        self.profile.as_ref().or(self.secrets.as_ref())
    }
}

/// The value Sluice injects, in the forms an upstream may echo it in: the
/// whole value, the token after its scheme (`Bearer x`), and for `Basic` the
/// decoded `user:password` and the password (each also percent-encoded or
/// JSON-escaped, see [`Entity::secrets`]).
fn credential_forms(value: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![value.as_bytes().to_vec()];
    if let Some((scheme, token)) = value.split_once(' ') {
        let token = token.trim();
        forms.push(token.as_bytes().to_vec());
        if scheme.eq_ignore_ascii_case("basic") {
            use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
            use base64::Engine as _;
            // With or without padding, as servers accept it.
            let lenient = GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                general_purpose::PAD.with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            if let Ok(decoded) = lenient.decode(token) {
                if let Some(i) = decoded.iter().position(|&b| b == b':') {
                    forms.push(decoded[i + 1..].to_vec());
                }
                forms.push(decoded);
            }
        }
    }
    forms
}

/// What responses of this target are masked with; `None`: nothing to mask.
fn mask_setup(cx: &Ctx<'_>) -> Result<Option<Rc<MaskSetup>>, String> {
    if let Some(m) = &cx.cache.borrow().masking {
        return Ok(Some(m.clone()));
    }
    let secret = match cx
        .target
        .credentials
        .as_ref()
        .and_then(|c| c.value.as_ref())
    {
        Some(v) => {
            let forms = credential_forms(v.expose());
            let forms: Vec<&[u8]> = forms.iter().map(Vec::as_slice).collect();
            Entity::secrets("credential", &forms)?
        }
        None => None,
    };
    let configured = match &cx.target.masking {
        Some(name) => {
            let (Some(p), Some(profile)) = (
                cx.config.masking.get(name),
                super::masking_profile(cx.config, cx.target)?,
            ) else {
                return Err(format!("masking profile `{name}` is missing"));
            };
            Some((p, profile))
        }
        None => None,
    };
    if configured.is_none() && secret.is_none() {
        return Ok(None);
    }
    let with_secret = |profile: Profile| -> Profile {
        match &secret {
            Some(e) => {
                let mut entities = profile.entities().to_vec();
                entities.push(e.clone());
                profile.with_entities(entities)
            }
            None => profile,
        }
    };
    let (profile, rules) = match configured {
        Some((p, profile)) => {
            // JSON field paths, and column rules as key names.
            let rules: Vec<(&str, &str)> = p
                .fields
                .iter()
                .chain(&p.columns)
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            (
                Some(with_secret(profile)),
                FieldRules::with_key(&rules, p.hash_key)?,
            )
        }
        None => (None, FieldRules::new(&[])?),
    };
    let secrets = match &secret {
        Some(e) => Some(Profile::new(&[], &[])?.with_entities(vec![e.clone()])),
        None => None,
    };
    let setup = Rc::new(MaskSetup {
        profile,
        rules: Rc::new(rules),
        secrets,
    });
    cx.cache.borrow_mut().masking = Some(setup.clone());
    Ok(Some(setup))
}

/// Whether this target's responses are read at all (masking, or a credential
/// to keep from flowing back).
fn reads_responses(target: &sluice_config::Target) -> bool {
    target.masking.is_some()
        || target
            .credentials
            .as_ref()
            .is_some_and(|c| c.value.is_some())
}

fn masking_for(cx: &Ctx<'_>, content_type: &[u8]) -> Result<Masking, String> {
    let Some(setup) = mask_setup(cx)? else {
        return Ok(Masking::None);
    };
    let media = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let ends = |suffix: &[u8]| {
        media.len() >= suffix.len()
            && media[media.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    // Media that cannot carry text are left to the credential's patterns.
    let binary = [&b"image/"[..], b"audio/", b"video/", b"font/"]
        .iter()
        .any(|p| media.len() >= p.len() && media[..p.len()].eq_ignore_ascii_case(p));
    match (&setup.profile, &setup.secrets, Events::of_media_type(media)) {
        (Some(profile), _, Some(kind)) => {
            let masker = EventMasker::new(
                kind,
                Masker::new(profile.clone()),
                cx.config.gateway.max_message,
            );
            Ok(Masking::Events(masker, setup.rules.clone()))
        }
        (Some(profile), _, _) if ends(b"/json") || ends(b"+json") => {
            let masker = cx.cache.borrow_mut().json_masker.take();
            let mut masker = masker.unwrap_or_else(|| Masker::new(profile.clone()));
            masker.counts = Default::default();
            Ok(Masking::Json(masker, setup.rules.clone()))
        }
        (Some(profile), _, _) if !binary => Ok(Masking::Stream(StreamMasker::new(profile.clone()))),
        (_, Some(secrets), _) => Ok(Masking::Stream(StreamMasker::new(secrets.clone()))),
        _ => Ok(Masking::None),
    }
}

/// Relays the response to `fwd`; masks it if the target says so.
async fn respond<C: AsyncWriteRent, U: AsyncReadRent + AsyncWriteRent>(
    cx: &Ctx<'_>,
    client: &mut C,
    up: &mut U,
    fwd: &Forward,
    may_retry: bool,
) -> Outcome {
    // The session's response buffer, reused across requests.
    let mut ubuf = std::mem::take(&mut cx.cache.borrow_mut().ubuf);
    ubuf.clear();
    let outcome = respond_with(cx, client, up, fwd, &mut ubuf, may_retry).await;
    if ubuf.capacity() <= 256 * 1024 {
        cx.cache.borrow_mut().ubuf = ubuf;
    }
    outcome
}

async fn respond_with<C: AsyncWriteRent, U: AsyncReadRent + AsyncWriteRent>(
    cx: &Ctx<'_>,
    client: &mut C,
    up: &mut U,
    fwd: &Forward,
    ubuf: &mut Vec<u8>,
    may_retry: bool,
) -> Outcome {
    loop {
        // The response head (interim 1xx responses are passed on first).
        let head = loop {
            let mut headers = [Header::EMPTY; MAX_HEADERS];
            match http::parse_response(ubuf, &mut headers, MAX_HEAD) {
                Ok(Status::Complete(r, n)) => break Ok((r.status, n)),
                Ok(Status::Partial) => {}
                Err(e) => break Err(e.to_string()),
            }
            match read_more_timeout(up, ubuf, cx.config.gateway.connect_timeout.max(STALL)).await {
                Ok(0) => break Err("the upstream closed the connection".into()),
                // A timeout is not a closed connection: never retried.
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Outcome::failed(format!("the upstream did not answer: {e}"))
                }
                Err(e) => break Err(e.to_string()),
                Ok(_) => {}
            }
        };
        let (status, head_len) = match head {
            Ok(h) => h,
            Err(_) if may_retry && ubuf.is_empty() => {
                return Outcome {
                    retry: true,
                    ..Outcome::failed("a reused connection closed".into())
                }
            }
            Err(e) => {
                cx.shard.metrics.error(ErrorKind::UpstreamIo);
                warn!(
                    "upstream_protocol_error",
                    target = cx.target.name,
                    error = e
                );
                let _ = reply(
                    client,
                    Reply::error(
                        502,
                        format!("target `{}` sent an invalid response", cx.target.name),
                    )
                    .closing(),
                )
                .await;
                return Outcome::failed(e);
            }
        };
        if (100..200).contains(&status) {
            if status == 101 {
                let _ = reply(
                    client,
                    Reply::error(
                        502,
                        "the upstream switched protocols, which Sluice does not allow",
                    )
                    .closing(),
                )
                .await;
                return Outcome::failed("upstream sent 101".into());
            }
            // 100 Continue was answered by the gateway already; others pass,
            // their header values masked like a final response's.
            if status != 100 {
                let setup = mask_setup(cx).ok().flatten();
                if let Some(profile) = setup.as_ref().and_then(|s| s.any()) {
                    // After `HTTP/1.1 103 `: the reason phrase and the fields.
                    let fields = head_len.min(13);
                    Masker::new(profile.clone()).mask_value(&mut ubuf[fields..head_len], None);
                }
            }
            if status != 100 && write_range(client, ubuf, 0..head_len).await.is_err() {
                return Outcome::failed("client write failed".into());
            }
            ubuf.drain(..head_len);
            continue;
        }
        let mut headers = [Header::EMPTY; MAX_HEADERS];
        let Ok(Status::Complete(resp, _)) = http::parse_response(ubuf, &mut headers, MAX_HEAD)
        else {
            return Outcome::failed("response head vanished".into());
        };
        let framing = match http::response_framing(&resp, &fwd.method) {
            Ok(f) => f,
            Err(e) => {
                let _ = reply(
                    client,
                    Reply::error(
                        502,
                        format!("target `{}` sent an invalid response: {e}", cx.target.name),
                    )
                    .closing(),
                )
                .await;
                return Outcome::failed(e.to_string());
            }
        };
        let upstream_close = resp.header("connection").is_some_and(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        }) || resp.version == 0;
        let mut masking = match masking_for(cx, resp.header("content-type").unwrap_or_default()) {
            Ok(m) => m,
            Err(e) => {
                let _ = reply(
                    client,
                    Reply::error(502, "the target's masking profile cannot be applied").closing(),
                )
                .await;
                return Outcome::failed(e);
            }
        };
        if framing == Framing::None {
            masking = Masking::None;
        }
        // Every Content-Encoding field counts, and a text the detectors cannot
        // read byte by byte (UTF-16/32) is as opaque as a compressed one.
        let encoded = resp.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("content-encoding")
                && h.value.split(|&b| b == b',').any(|c| {
                    !c.trim_ascii().is_empty() && !c.trim_ascii().eq_ignore_ascii_case(b"identity")
                })
        }) || resp.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("content-type")
                && h.value
                    .windows(6)
                    .any(|w| w.eq_ignore_ascii_case(b"utf-16") || w.eq_ignore_ascii_case(b"utf-32"))
        });
        if encoded && !matches!(masking, Masking::None) {
            warn!("masking_refused_encoded_body", target = cx.target.name);
            let _ = reply(client, Reply::error(502, "the target sent a compressed body, which Sluice cannot mask; it was not passed on").closing()).await;
            return Outcome::failed("encoded body with masking on".into());
        }
        // The head that goes to the client: the upstream's, minus hop-by-hop
        // and framing headers, plus our own framing.
        // Events change length: re-chunked for HTTP/1.1 clients, else sent
        // until close.
        let events_chunked = fwd.http11 && framing != Framing::UntilClose;
        let client_close = !fwd.keep_alive
            || framing == Framing::UntilClose
            || (matches!(masking, Masking::Events(..)) && !events_chunked);
        let mut head = Vec::with_capacity(head_len + 64);
        let framing_headers_replaced = !matches!(masking, Masking::None);
        // Header values are masked too (a `Location` or an `X-User` header can
        // carry what the body would not), whatever the body's type, and so is
        // the reason phrase (`401 bad key Bearer ...`).
        let cached = cx.cache.borrow_mut().head_masker.take();
        let mut head_masker = cached.or_else(|| {
            let setup = mask_setup(cx).ok().flatten()?;
            Some(Masker::new(setup.any()?.clone()))
        });
        let _ = write!(head, "HTTP/1.1 {} ", resp.status);
        let at = head.len();
        head.extend_from_slice(resp.reason.as_bytes());
        if let Some(m) = head_masker.as_mut() {
            m.mask_value(&mut head[at..], None);
        }
        head.extend_from_slice(b"\r\n");
        for h in resp.headers {
            let framing_header = h.name.eq_ignore_ascii_case("content-length")
                || h.name.eq_ignore_ascii_case("transfer-encoding");
            if [
                "connection",
                "keep-alive",
                "proxy-connection",
                "te",
                "trailer",
                "upgrade",
            ]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(h.name))
                || (framing_header && framing_headers_replaced)
            {
                continue;
            }
            head.extend_from_slice(h.name.as_bytes());
            head.extend_from_slice(b": ");
            let at = head.len();
            head.extend_from_slice(h.value);
            if let (Some(m), false) = (head_masker.as_mut(), framing_header) {
                m.mask_value(&mut head[at..], None);
            }
            head.extend_from_slice(b"\r\n");
        }
        let head_masked = match head_masker {
            Some(mut m) => {
                let counts = m.counts.pairs();
                m.counts = Default::default();
                cx.cache.borrow_mut().head_masker = Some(m);
                counts
            }
            None => Vec::new(),
        };
        if client_close {
            head.extend_from_slice(b"connection: close\r\n");
        }
        ubuf.drain(..head_len);
        let relayed = match masking {
            Masking::None => {
                head.extend_from_slice(b"\r\n");
                pass_body(client, up, ubuf, head, framing).await
            }
            Masking::Json(m, rules) => {
                let (relayed, masker) = json_body(
                    client,
                    up,
                    ubuf,
                    head,
                    framing,
                    m,
                    &rules,
                    cx.config.gateway.max_message as u64,
                )
                .await;
                cx.cache.borrow_mut().json_masker = Some(masker);
                relayed
            }
            Masking::Events(m, rules) => {
                events_body(client, up, ubuf, head, framing, events_chunked, m, &rules).await
            }
            Masking::Stream(m) => stream_body(client, up, ubuf, head, framing, m).await,
        };
        return match relayed {
            Ok((bytes, mut masked)) => Outcome {
                status,
                bytes,
                masked: {
                    for (name, n) in head_masked {
                        match masked.iter_mut().find(|(m, _)| *m == name) {
                            Some((_, total)) => *total += n,
                            None => masked.push((name, n)),
                        }
                    }
                    masked
                },
                error: None,
                upstream_reusable: !upstream_close
                    && framing != Framing::UntilClose
                    && ubuf.is_empty(),
                client_ok: !client_close,
                retry: false,
            },
            Err(e) => {
                debug!("response_relay_failed", target = cx.target.name, error = e);
                cx.shard.metrics.error(ErrorKind::UpstreamIo);
                Outcome {
                    status,
                    ..Outcome::failed(e)
                }
            }
        };
    }
}

type Relayed = Result<(u64, Vec<(&'static str, u64)>), String>;

/// Reads from the upstream into `ubuf`; `Ok(false)` at EOF.
async fn fill<U: AsyncReadRent>(up: &mut U, ubuf: &mut Vec<u8>) -> Result<bool, String> {
    match read_more_timeout(up, ubuf, STALL).await {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(e.to_string()),
    }
}

/// No masking: the body passes as framed (chunked bytes as they are, checked).
async fn pass_body<C: AsyncWriteRent, U: AsyncReadRent>(
    client: &mut C,
    up: &mut U,
    ubuf: &mut Vec<u8>,
    mut head: Vec<u8>,
    framing: Framing,
) -> Relayed {
    // The head goes out with the first piece of the body, in one write.
    let head_len = head.len();
    let mut total = 0u64;
    let mut decoder = ChunkedDecoder::new(u64::MAX);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut first = true;
    loop {
        let (take, done) = match framing {
            Framing::None => (0, true),
            Framing::Length(_) => {
                let n = (ubuf.len() as u64).min(left) as usize;
                left -= n as u64;
                (n, left == 0)
            }
            Framing::Chunked => {
                let mut checked = 0;
                let done = loop {
                    let r = decoder
                        .decode(&ubuf[checked..])
                        .map_err(|e| e.to_string())?;
                    checked += r.consumed;
                    if r.done || r.consumed == 0 {
                        break r.done;
                    }
                };
                (checked, done)
            }
            Framing::UntilClose => (ubuf.len(), false),
        };
        if first {
            head.extend_from_slice(&ubuf[..take]);
            let (res, _) = client.write_all(std::mem::take(&mut head)).await;
            res.map_err(|e| e.to_string())?;
            first = false;
        } else if take > 0 {
            write_range(client, ubuf, 0..take)
                .await
                .map_err(|e| e.to_string())?;
        }
        ubuf.drain(..take);
        total += take as u64;
        if done {
            return Ok((total + head_len as u64, Vec::new()));
        }
        if !fill(up, ubuf).await? {
            return if framing == Framing::UntilClose {
                Ok((total + head_len as u64, Vec::new()))
            } else {
                Err("the upstream closed the connection mid-body".into())
            };
        }
    }
}

/// Reads a whole response body (decoding chunks), bounded by `max`.
async fn whole_body<U: AsyncReadRent>(
    up: &mut U,
    ubuf: &mut Vec<u8>,
    framing: Framing,
    max: u64,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            if n > max {
                return Err(format!(
                    "a {n}-byte body is larger than max_message and cannot be masked"
                ));
            }
            while (ubuf.len() as u64) < n {
                if !fill(up, ubuf).await? {
                    return Err("the upstream closed the connection mid-body".into());
                }
            }
            body.extend(ubuf.drain(..n as usize));
        }
        Framing::Chunked => {
            let mut d = ChunkedDecoder::new(max);
            loop {
                let r = d.decode(ubuf).map_err(|e| e.to_string())?;
                body.extend_from_slice(&ubuf[r.data.clone()]);
                ubuf.drain(..r.consumed);
                if r.done {
                    break;
                }
                if r.consumed == 0 && !fill(up, ubuf).await? {
                    return Err("the upstream closed the connection mid-body".into());
                }
            }
        }
        Framing::UntilClose => {
            loop {
                if ubuf.len() as u64 > max {
                    return Err("the body is larger than max_message and cannot be masked".into());
                }
                if !fill(up, ubuf).await? {
                    break;
                }
            }
            body = std::mem::take(ubuf);
        }
    }
    Ok(body)
}

#[allow(clippy::too_many_arguments)]
async fn json_body<C: AsyncWriteRent, U: AsyncReadRent>(
    client: &mut C,
    up: &mut U,
    ubuf: &mut Vec<u8>,
    mut head: Vec<u8>,
    framing: Framing,
    mut masker: Masker,
    rules: &FieldRules,
    max: u64,
) -> (Relayed, Masker) {
    let mut body = match whole_body(up, ubuf, framing, max).await {
        Ok(b) => b,
        Err(e) => {
            // Nothing was sent yet: the client gets a clear error, never the body.
            let r = Reply::error(502, format!("the response could not be masked: {e}")).closing();
            let _ = client.write_all(r.bytes()).await;
            return (Err(e), masker);
        }
    };
    // A UTF-8 byte order mark is not part of the document.
    if body.starts_with(b"\xEF\xBB\xBF") {
        body.drain(..3);
    }
    if mask_json(&mut body, &mut masker, rules).is_err() {
        if !rules.is_empty() {
            // Field rules cannot be applied to what does not parse: refuse
            // rather than pass named fields in clear.
            let r = Reply::error(
                502,
                "the target sent JSON that Sluice cannot parse, so its field masking rules cannot be applied; it was not passed on",
            )
            .closing();
            let (res, _) = client.write_all(r.bytes()).await;
            let _ = res;
            return (Err("unparsable JSON with field rules".into()), masker);
        }
        // Declared JSON but not JSON: masked as text instead (never passed raw).
        let mut s = StreamMasker::new(masker.profile().clone());
        let mut out = Vec::with_capacity(body.len());
        s.feed(&body, &mut out);
        s.finish(&mut out);
        body = out;
        masker.counts = s.masker().counts.clone();
        // A lenient client (NaN, comments) still decodes escapes.
        mask_escaped_runs(&mut body, &mut masker);
    }
    let _ = write!(head, "content-length: {}\r\n\r\n", body.len());
    let n = (head.len() + body.len()) as u64;
    head.extend_from_slice(&body);
    let (res, _) = client.write_all(head).await;
    let relayed = match res {
        Ok(_) => Ok((n, masker.counts.pairs())),
        Err(e) => Err(e.to_string()),
    };
    (relayed, masker)
}

async fn stream_body<C: AsyncWriteRent, U: AsyncReadRent>(
    client: &mut C,
    up: &mut U,
    ubuf: &mut Vec<u8>,
    mut head: Vec<u8>,
    framing: Framing,
    mut masker: StreamMasker,
) -> Relayed {
    // Same-length masking: a Content-Length stays true; chunked bodies are
    // re-chunked as masked bytes are released; close-delimited stay so.
    let chunked = framing == Framing::Chunked;
    match framing {
        Framing::Length(n) => {
            head.extend_from_slice(format!("content-length: {n}\r\n\r\n").as_bytes())
        }
        Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
        _ => head.extend_from_slice(b"\r\n"),
    }
    let mut total = 0u64;
    let mut out = head;
    let mut released = Vec::with_capacity(16 * 1024);
    let mut decoder = ChunkedDecoder::new(u64::MAX);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    loop {
        let done = match framing {
            Framing::Length(_) => {
                let n = (ubuf.len() as u64).min(left) as usize;
                masker.feed(&ubuf[..n], &mut released);
                ubuf.drain(..n);
                left -= n as u64;
                left == 0
            }
            Framing::Chunked => loop {
                let r = decoder.decode(ubuf).map_err(|e| e.to_string())?;
                masker.feed(&ubuf[r.data.clone()], &mut released);
                ubuf.drain(..r.consumed);
                if r.done || r.consumed == 0 {
                    break r.done;
                }
            },
            _ => {
                masker.feed(ubuf, &mut released);
                ubuf.clear();
                false
            }
        };
        if done {
            masker.finish(&mut released);
        }
        if !released.is_empty() {
            if chunked {
                out.extend_from_slice(format!("{:x}\r\n", released.len()).as_bytes());
                out.extend_from_slice(&released);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&released);
            }
            released.clear();
        }
        if done && chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        if !out.is_empty() {
            total += out.len() as u64;
            let (res, back) = client.write_all(std::mem::take(&mut out)).await;
            res.map_err(|e| e.to_string())?;
            out = back;
            out.clear();
        }
        if done {
            return Ok((total, masker.masker().counts.pairs()));
        }
        if !fill(up, ubuf).await? {
            if framing == Framing::UntilClose {
                masker.finish(&mut released);
                let (res, _) = client.write_all(released).await;
                res.map_err(|e| e.to_string())?;
                return Ok((total, masker.masker().counts.pairs()));
            }
            return Err("the upstream closed the connection mid-body".into());
        }
    }
}

/// An event stream (SSE, JSON lines): each event is released, masked, as soon
/// as it is complete; the body is re-chunked (`chunked`) or sent until close.
/// A stream that cannot be masked is cut there: a chunked client sees no
/// last chunk, and nothing after the cut is passed.
#[allow(clippy::too_many_arguments)]
async fn events_body<C: AsyncWriteRent, U: AsyncReadRent>(
    client: &mut C,
    up: &mut U,
    ubuf: &mut Vec<u8>,
    mut head: Vec<u8>,
    framing: Framing,
    chunked: bool,
    mut masker: EventMasker,
    rules: &FieldRules,
) -> Relayed {
    head.extend_from_slice(if chunked {
        b"transfer-encoding: chunked\r\n\r\n"
    } else {
        b"\r\n"
    });
    let mut total = 0u64;
    let mut out = head;
    let mut released = Vec::with_capacity(16 * 1024);
    let mut decoder = ChunkedDecoder::new(u64::MAX);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let failed = |e: sluice_masking::events::EventError| {
        format!("the event stream could not be masked: {e}")
    };
    loop {
        // What arrived is fed; a failure still releases the events before it.
        let step = 'feed: {
            match framing {
                Framing::Length(_) => {
                    let n = (ubuf.len() as u64).min(left) as usize;
                    if let Err(e) = masker.feed(&ubuf[..n], rules, &mut released) {
                        break 'feed Err(failed(e));
                    }
                    ubuf.drain(..n);
                    left -= n as u64;
                    Ok(left == 0)
                }
                Framing::Chunked => loop {
                    let r = match decoder.decode(ubuf) {
                        Ok(r) => r,
                        Err(e) => break 'feed Err(e.to_string()),
                    };
                    if let Err(e) = masker.feed(&ubuf[r.data.clone()], rules, &mut released) {
                        break 'feed Err(failed(e));
                    }
                    ubuf.drain(..r.consumed);
                    if r.done || r.consumed == 0 {
                        break Ok(r.done);
                    }
                },
                _ => {
                    if let Err(e) = masker.feed(ubuf, rules, &mut released) {
                        break 'feed Err(failed(e));
                    }
                    ubuf.clear();
                    Ok(false)
                }
            }
        };
        let step = match step {
            Ok(true) => masker
                .finish(rules, &mut released)
                .map(|()| true)
                .map_err(failed),
            other => other,
        };
        let done = step == Ok(true);
        if !released.is_empty() {
            if chunked {
                let _ = write!(out, "{:x}\r\n", released.len());
                out.extend_from_slice(&released);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&released);
            }
            released.clear();
        }
        if done && chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        if !out.is_empty() {
            total += out.len() as u64;
            let (res, back) = client.write_all(std::mem::take(&mut out)).await;
            res.map_err(|e| e.to_string())?;
            out = back;
            out.clear();
        }
        if step? {
            return Ok((total, masker.masker().counts.pairs()));
        }
        if !fill(up, ubuf).await? {
            if framing != Framing::UntilClose {
                return Err("the upstream closed the connection mid-body".into());
            }
            let finished = masker.finish(rules, &mut released).map_err(failed);
            let (res, _) = client.write_all(released).await;
            res.map_err(|e| e.to_string())?;
            finished?;
            return Ok((total, masker.masker().counts.pairs()));
        }
    }
}

#[cfg(test)]
mod override_tests {
    #[test]
    fn method_overrides_in_the_query_are_found_however_spelled() {
        for t in [
            "/v1/c/42?_method=DELETE",
            "/v1/c/42?a=1&_METHOD=delete",
            "/v1/c/42?%5Fmethod=DELETE",
            "/v1/c/42?_%6Dethod=DELETE",
            "/v1/c/42?x=1;_method",
            "/v1/c/42?.method=DELETE",
            "/v1/c/42?%2Emethod=DELETE",
            "/v1/c/42?[method=DELETE",
            "/v1/c/42?+_method=DELETE",
            "/v1/c/42?%20_method=DELETE",
            "/v1/c/42?_method%00x=DELETE",
            "/v1/c/42?_method[]=DELETE",
        ] {
            assert!(super::query_overrides_method(t), "{t}");
        }
        for t in [
            "/v1/c/42",
            "/v1/c/42?method=DELETE",
            "/v1/c/42?a=_method",
            "/_method",
        ] {
            assert!(!super::query_overrides_method(t), "{t}");
        }
    }

    #[test]
    fn multipart_bodies_naming_an_override_are_caught_split_anywhere() {
        let scan = |body: &[u8], cut: usize| {
            let mut s = super::MultipartScan::new(b"b");
            s.feed(&body[..cut])
                .and_then(|()| s.feed(&body[cut..]))
                .and_then(|()| s.finish())
        };
        let part = |headers: &str| {
            format!("--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n name=\"\r\n--b\r\n{headers}\r\n\r\nDELETE\r\n--b--\r\n")
        };
        for headers in [
            "Content-Disposition: form-data; name=\"_method\"",
            "Content-Disposition: form-data; name=_method",
            "content-disposition: form-data; NAME = \"_METHOD\"",
            "Content-Disposition: form-data; name=\".method\"",
            "Content-Disposition: form-data; name=\" _method\"",
            "Content-Disposition: form-data; name=\"_method[]\"",
            "Content-Disposition: form-data; name='_method'",
            "Content-Disposition: form-data; name=\"_meth\\od\"",
            "Content-Disposition: form-data; name=_method\tx",
            "Content-Disposition: form-data; name*=utf-8''%5Fmethod",
            "Content-Disposition: form-data; name*=UTF-8'en'_%6Dethod",
            "Content-ID: _method",
            "Content-Disposition: form-data;\r\n name=\"_method\"",
            "Content-Disposition: form-data; name=\"x\"\r\n; name=\"_method\"",
            "X-A: Content-Disposition: form-data; name=_method",
        ] {
            let body = part(headers);
            for cut in 0..=body.len() {
                assert!(
                    scan(body.as_bytes(), cut).is_err(),
                    "{headers} split at {cut}"
                );
            }
        }
        for headers in [
            "Content-Disposition: form-data; name=\"method\"",
            "Content-Disposition: form-data; filename=\"_method\"; name=\"file\"",
            "Content-Disposition: form-data; name=\"_method_x\"",
        ] {
            assert!(scan(part(headers).as_bytes(), 0).is_ok(), "{headers}");
        }
        // After a closing delimiter (PHP reads on), and with bare LF line ends.
        for body in [
            "--b--\r\n--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n",
            "--b\nContent-Disposition: form-data; name=\"_method\"\n\nDELETE\n--b--\n",
        ] {
            for cut in 0..=body.len() {
                assert!(scan(body.as_bytes(), cut).is_err(), "{body:?} split at {cut}");
            }
        }
        // Part data that spells a header is data.
        let data = "--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nname=\"_method\"\r\n--b--\r\n";
        assert!(scan(data.as_bytes(), 10).is_ok());
        // Headers padded past 8 KiB are refused rather than missed.
        let padded = part(&format!(
            "Content-Disposition: form-data; name={}_method",
            " ".repeat(9000)
        ));
        assert!(scan(padded.as_bytes(), 100).is_err());
    }

    #[test]
    fn urlencoded_bodies_naming_an_override_are_caught_split_anywhere() {
        let caught = |body: &[u8], cut: usize| {
            let mut s = super::FormScan::new(&super::Form::Urlencoded);
            s.feed(&body[..cut])
                .and_then(|()| s.feed(&body[cut..]))
                .and_then(|()| s.finish())
                .is_err()
        };
        let padded = format!("{}_method=PUT", "+".repeat(10_000));
        for body in [
            &b"a=1&_method=DELETE"[..],
            b"%5Fmethod=PUT",
            b"_%6Dethod=PUT",
            b"x=1;_method",
            b"a=1&.method=DELETE",
            b"%20_method=DELETE",
            b"_method[]=DELETE",
            b"_method%00x=DELETE",
            b"[_method]=DELETE",
            b"]_method=DELETE",
            b"_method]=DELETE",
            b"[[_method]=DELETE",
            b"]]]]]]]]_method=DELETE",
            b"%5B%5B_method=DELETE",
            b"[method=DELETE",
            padded.as_bytes(),
        ] {
            assert!(super::form_overrides_method(body) || body.len() > 100);
            for cut in 0..=body.len().min(40) {
                assert!(
                    caught(body, cut),
                    "{} at {cut}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        for body in [
            &b"method=PUT&note=_method"[..],
            b"a=_method&b=%5Fmethod",
            b"\x00\xff%zz&&==;",
            b"_methodx=1",
            b"_method.x=1&_method_x=2",
        ] {
            assert!(!super::form_overrides_method(body));
            for cut in 0..=body.len() {
                assert!(
                    !caught(body, cut),
                    "{} at {cut}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
}
