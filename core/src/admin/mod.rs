//! The admin listener (`gateway.admin`): `GET /healthz`, Prometheus `GET /metrics`,
//! `POST /api/reload` (a token in one of `identity.admin_groups`), and the
//! approvals API ([`approvals`]: approvers act with their own token).
//!
//! Every shard listens on the admin address too (`SO_REUSEPORT`), so any shard can
//! answer; `/metrics` asks every shard for a snapshot and merges them.
//! Every answer is JSON except the metrics text; bad requests get a JSON error.

use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use sluice_protocols::{http, Status};

use crate::metrics::{render, ErrorKind};
use crate::shard::Shard;

pub mod approvals;
pub mod console;
mod oidc;

const MAX_HEAD: usize = 16 * 1024;
/// Largest request body the admin API reads (a vote's reason, a few fields).
const MAX_BODY: usize = 64 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve_connection<S: AsyncReadRent + AsyncWriteRent>(shard: Rc<Shard>, mut stream: S) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // The console's event stream keeps the connection: who asks for it.
        let mut stream_for: Option<Option<String>> = None;
        let reply = {
            let mut headers = [http::Header::EMPTY; 64];
            match http::parse_request(&buf, &mut headers, MAX_HEAD) {
                Ok(Status::Complete(req, _)) if console::is_event_stream(&req) => {
                    stream_for = Some(console::event_session(&req));
                    None
                }
                Ok(Status::Complete(req, head)) => match body_length(&req) {
                    Err(reply) => Some(reply),
                    Ok(n) if buf.len() >= head + n => {
                        Some(route(&shard, &req, &buf[head..head + n]).await)
                    }
                    Ok(_) => None,
                },
                Ok(Status::Partial) => None,
                Err(e) => {
                    shard.metrics.error(ErrorKind::AdminRequest);
                    Some(json(400, "Bad Request", &format!("{{\"error\":\"{e}\"}}")))
                }
            }
        };
        if let Some(identity) = stream_for {
            console::events(shard, identity, stream).await;
            return;
        }
        if let Some(reply) = reply {
            let _ = stream.write_all(reply).await;
            return;
        }
        if buf.len() == buf.capacity() {
            buf.reserve(4096);
        }
        let len = buf.len();
        let read = monoio::time::timeout(READ_TIMEOUT, stream.read(buf.slice_mut(len..))).await;
        match read {
            Ok((Ok(n), b)) if n > 0 => buf = b.into_inner(),
            _ => return,
        }
    }
}

/// The request body's length from `Content-Length` (chunked bodies are refused).
fn body_length(req: &http::Request<'_, '_>) -> Result<usize, Vec<u8>> {
    if req.header("transfer-encoding").is_some() {
        return Err(json(
            411,
            "Length Required",
            r#"{"error":"send the body with Content-Length"}"#,
        ));
    }
    let Some(v) = req.header("content-length") else {
        return Ok(0);
    };
    match std::str::from_utf8(v)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) if n <= MAX_BODY => Ok(n),
        Some(_) => Err(json(
            413,
            "Payload Too Large",
            &format!(r#"{{"error":"the body is larger than {MAX_BODY} bytes"}}"#),
        )),
        None => Err(json(
            400,
            "Bad Request",
            r#"{"error":"invalid Content-Length"}"#,
        )),
    }
}

async fn route(shard: &Shard, req: &http::Request<'_, '_>, body: &[u8]) -> Vec<u8> {
    if req.path() == "/api/approvals" || req.path().starts_with("/api/approvals/") {
        return approvals::route(shard, req, body).await;
    }
    if console::handles(req.path()) || req.path() == "/api/console/link" {
        return console::route(shard, req, body).await;
    }
    match (req.method, req.path()) {
        ("GET", "/healthz") => {
            if shard.stopping.is_set() {
                json(503, "Service Unavailable", r#"{"status":"draining"}"#)
            } else if let Some(why) = shard.shared.approvals.health() {
                // Still serving (allowed traffic flows; held statements are
                // refused or wait): a balancer keeps it, an operator sees why.
                json(
                    200,
                    "OK",
                    &serde_json::json!({ "status": "degraded", "reason": format!("approval store: {why}") })
                        .to_string(),
                )
            } else {
                json(200, "OK", r#"{"status":"ok"}"#)
            }
        }
        ("GET", "/metrics") => {
            let snapshots = shard.shared.scrape().await;
            let mut body = render(&snapshots, shard.shared.started.elapsed());
            shard.shared.ssh_metrics.render(&mut body);
            if let Some(errors) = shard.shared.approvals.store_errors() {
                let up = u8::from(shard.shared.approvals.health().is_none());
                body.push_str(&format!(
                    "# HELP sluice_state_up Whether the shared approval store answers.\n\
                     # TYPE sluice_state_up gauge\nsluice_state_up {up}\n\
                     # HELP sluice_state_errors_total Failed calls to the shared approval store and lost connections.\n\
                     # TYPE sluice_state_errors_total counter\nsluice_state_errors_total {errors}\n"
                ));
            }
            response(200, "OK", "text/plain; version=0.0.4", body.as_bytes())
        }
        ("POST", "/api/reload") => reload(shard, req).await,
        ("GET", "/api/audit/anchor") => anchor(shard),
        (_, "/api/reload") => json(
            405,
            "Method Not Allowed",
            r#"{"error":"method not allowed; use POST"}"#,
        ),
        (_, "/healthz" | "/metrics" | "/api/audit/anchor") => json(
            405,
            "Method Not Allowed",
            r#"{"error":"method not allowed; use GET"}"#,
        ),
        _ => json(404, "Not Found", r#"{"error":"not found"}"#),
    }
}

/// The caller of an API call: whoever the `Authorization: Bearer` token proves.
pub async fn caller(
    shard: &Shard,
    req: &http::Request<'_, '_>,
) -> Result<std::rc::Rc<crate::identity::Identity>, Vec<u8>> {
    let token = req.bearer_token().ok_or_else(|| {
        json(
            401,
            "Unauthorized",
            r#"{"error":"send Authorization: Bearer <token>"}"#,
        )
    })?;
    shard.authenticate(token).await.map_err(|e| {
        json(
            401,
            "Unauthorized",
            &serde_json::json!({ "error": e.to_string() }).to_string(),
        )
    })
}

/// Is this caller in one of `identity.admin_groups`?
pub fn is_admin(shard: &Shard, identity: &crate::identity::Identity) -> bool {
    let config = shard.generation().config.clone();
    config
        .identity
        .as_ref()
        .is_some_and(|i| identity.groups.iter().any(|g| i.admin_groups.contains(g)))
}

/// The caller of an admin write call: a valid token in one of `admin_groups`.
pub async fn admin_caller(
    shard: &Shard,
    req: &http::Request<'_, '_>,
) -> Result<std::rc::Rc<crate::identity::Identity>, Vec<u8>> {
    let identity = caller(shard, req).await?;
    let config = shard.generation().config.clone();
    let admins = config
        .identity
        .as_ref()
        .map(|i| i.admin_groups.clone())
        .unwrap_or_default();
    if !identity.groups.iter().any(|g| admins.contains(g)) {
        return Err(json(
            403,
            "Forbidden",
            &serde_json::json!({ "error": format!("`{}` is not in an admin group", identity.subject) }).to_string(),
        ));
    }
    Ok(identity)
}

/// The last durable signed checkpoint, for `sluice audit verify --expect`: an
/// external monitor that keeps these can tell a log cut back or rewritten.
fn anchor(shard: &Shard) -> Vec<u8> {
    let Some(audit) = &shard.shared.audit else {
        return json(
            404,
            "Not Found",
            r#"{"error":"no audit log is configured"}"#,
        );
    };
    let anchor = audit.pipeline.anchor.lock().ok().and_then(|a| a.clone());
    match anchor {
        Some(a) => json(
            200,
            "OK",
            &serde_json::json!({ "seq": a.seq, "hash": a.hash, "anchor": a.to_string() })
                .to_string(),
        ),
        None => json(
            503,
            "Service Unavailable",
            r#"{"error":"no checkpoint has been written yet"}"#,
        ),
    }
}

async fn reload(shard: &Shard, req: &http::Request<'_, '_>) -> Vec<u8> {
    let identity = match admin_caller(shard, req).await {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    let Some(lifecycle) = shard.shared.lifecycle.get() else {
        return json(503, "Service Unavailable", r#"{"error":"not ready"}"#);
    };
    let (tx, rx) = flume::bounded(1);
    if lifecycle.send(crate::shard::Event::Reload(tx)).is_err() {
        return json(503, "Service Unavailable", r#"{"error":"shutting down"}"#);
    }
    let outcome = match monoio::time::timeout(Duration::from_secs(30), rx.recv_async()).await {
        Ok(Ok(outcome)) => outcome,
        _ => Err("the reload did not finish".to_owned()),
    };
    if let Some(audit) = shard.audit() {
        use crate::audit::Event as _;
        let event = crate::audit::event::AdminAction {
            action: "reload",
            subject: &identity.subject,
            error: outcome.as_ref().err().map(String::as_str),
        };
        audit.note(|out| event.encode(out));
    }
    match outcome {
        Ok(()) => json(200, "OK", r#"{"status":"reloaded"}"#),
        Err(errors) => json(
            422,
            "Unprocessable Entity",
            &serde_json::json!({ "error": "the new configuration is invalid; the running one stays", "details": errors.lines().collect::<Vec<_>>() }).to_string(),
        ),
    }
}

pub(crate) fn json(status: u16, reason: &str, body: &str) -> Vec<u8> {
    response(status, reason, "application/json", body.as_bytes())
}

fn response(status: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}
