//! The admin listener (`gateway.admin`): `GET /healthz` and Prometheus `GET /metrics`.
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
        (_, "/healthz" | "/metrics") => json(
            405,
            "Method Not Allowed",
            r#"{"error":"method not allowed; use GET"}"#,
        ),
        _ => json(404, "Not Found", r#"{"error":"not found"}"#),
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
