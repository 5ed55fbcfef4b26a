//! The admin listener (`gateway.admin`): `GET /healthz`, Prometheus `GET /metrics`,
//! and `POST /api/reload` (a token in one of `identity.admin_groups`).
//!
//! Every shard listens on the admin address too (`SO_REUSEPORT`), so any shard can
//! answer; `/metrics` asks every shard for a snapshot and merges them.
//! Every answer is JSON except the metrics text; bad requests get a JSON error.

use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use sluice_protocols::{http, Status};

use crate::metrics::{render, ErrorKind};
use crate::runtime::Shard;

const MAX_HEAD: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve_connection(shard: Rc<Shard>, mut stream: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let reply = {
            let mut headers = [http::Header::EMPTY; 64];
            match http::parse_request(&buf, &mut headers, MAX_HEAD) {
                Ok(Status::Complete(req, _)) => Some(route(&shard, &req).await),
                Ok(Status::Partial) => None,
                Err(e) => {
                    shard.metrics.error(ErrorKind::AdminRequest);
                    Some(json(400, "Bad Request", &format!("{{\"error\":\"{e}\"}}")))
                }
            }
        };
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

async fn route(shard: &Shard, req: &http::Request<'_, '_>) -> Vec<u8> {
    match (req.method, req.path()) {
        ("GET", "/healthz") => {
            if shard.stopping.is_set() {
                json(503, "Service Unavailable", r#"{"status":"draining"}"#)
            } else {
                json(200, "OK", r#"{"status":"ok"}"#)
            }
        }
        ("GET", "/metrics") => {
            let snapshots = shard.shared.scrape().await;
            let body = render(&snapshots, shard.shared.started.elapsed());
            response(200, "OK", "text/plain; version=0.0.4", body.as_bytes())
        }
        ("POST", "/api/reload") => reload(shard, req).await,
        (_, "/api/reload") => json(
            405,
            "Method Not Allowed",
            r#"{"error":"method not allowed; use POST"}"#,
        ),
        (_, "/healthz" | "/metrics") => json(
            405,
            "Method Not Allowed",
            r#"{"error":"method not allowed; use GET"}"#,
        ),
        _ => json(404, "Not Found", r#"{"error":"not found"}"#),
    }
}

/// The caller of an admin write call: a valid token in one of `admin_groups`.
pub async fn admin_caller(
    shard: &Shard,
    req: &http::Request<'_, '_>,
) -> Result<std::rc::Rc<crate::identity::Identity>, Vec<u8>> {
    let token = req
        .header("authorization")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| {
            json(
                401,
                "Unauthorized",
                r#"{"error":"send Authorization: Bearer <token>"}"#,
            )
        })?;
    let identity = shard.authenticate(token.trim()).await.map_err(|e| {
        json(
            401,
            "Unauthorized",
            &serde_json::json!({ "error": e.to_string() }).to_string(),
        )
    })?;
    let config = shard.config();
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

async fn reload(shard: &Shard, req: &http::Request<'_, '_>) -> Vec<u8> {
    let identity = match admin_caller(shard, req).await {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    let Some(lifecycle) = shard.shared.lifecycle.get() else {
        return json(503, "Service Unavailable", r#"{"error":"not ready"}"#);
    };
    let (tx, rx) = flume::bounded(1);
    if lifecycle.send(crate::runtime::Event::Reload(tx)).is_err() {
        return json(503, "Service Unavailable", r#"{"error":"shutting down"}"#);
    }
    let outcome = match monoio::time::timeout(Duration::from_secs(30), rx.recv_async()).await {
        Ok(Ok(outcome)) => outcome,
        _ => Err("the reload did not finish".to_owned()),
    };
    if let Some(audit) = shard.audit() {
        audit.note(|out| {
            let rec = crate::audit::Rec::begin(out, "admin", crate::audit::now_ms())
                .str("action", "reload")
                .str("subject", &identity.subject)
                .bool("ok", outcome.is_ok());
            match &outcome {
                Err(e) => rec.str("error", e).end(),
                Ok(()) => rec.end(),
            }
        });
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

fn json(status: u16, reason: &str, body: &str) -> Vec<u8> {
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
