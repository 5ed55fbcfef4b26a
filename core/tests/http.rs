//! The HTTP gateway end to end: the real binary in front of a small HTTP/1.1
//! server started by the test, with curl, a Rust HTTP client (ureq) and raw
//! sockets as callers.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use sluice_protocols::http::{self as h, ChunkedDecoder, Framing, Header};
use sluice_protocols::Status;
use support::pg::*;
use support::*;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

const PII_TEXT: &str =
    "contact jane@example.com or call, card 4111 1111 1111 1111, ssn 123-45-6789 ok. ";

/// The upstream: a keep-alive HTTP/1.1 server recording every request.
fn upstream() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { break };
            let log = log.clone();
            thread::spawn(move || serve_upstream(s, log));
        }
    });
    (addr, seen)
}

fn serve_upstream(mut s: TcpStream, log: Arc<Mutex<Vec<Seen>>>) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    loop {
        // Head.
        let (req, head_len) = loop {
            let mut headers = [Header::EMPTY; 64];
            if let Ok(Status::Complete(r, n)) = h::parse_request(&buf, &mut headers, 65536) {
                let framing = h::request_framing(&r, 1 << 30).unwrap();
                let seen = Seen {
                    method: r.method.into(),
                    target: r.target.into(),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                    body: Vec::new(),
                };
                break ((seen, framing), n);
            }
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..head_len);
        let (mut seen, framing) = req;
        // Body.
        match framing {
            Framing::Length(n) => {
                while buf.len() < n as usize {
                    let mut chunk = [0u8; 8192];
                    let k = s.read(&mut chunk).unwrap_or(0);
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                }
                seen.body = buf.drain(..n as usize).collect();
            }
            Framing::Chunked => {
                let mut d = ChunkedDecoder::new(1 << 30);
                loop {
                    let r = d.decode(&buf).unwrap();
                    seen.body.extend_from_slice(&buf[r.data.clone()]);
                    buf.drain(..r.consumed);
                    if r.done {
                        break;
                    }
                    if r.consumed == 0 {
                        let mut chunk = [0u8; 8192];
                        let k = s.read(&mut chunk).unwrap_or(0);
                        if k == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..k]);
                    }
                }
            }
            _ => {}
        }
        log.lock().unwrap().push(seen.clone());
        if seen.target == "/v1/sse-live" {
            // One event, then the rest only once the test has seen it.
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            let first = "data: {\"to\":\"jane\\u0040example.com\"}\n\n";
            let _ = s.write_all(format!("{head}{:x}\r\n{first}\r\n", first.len()).as_bytes());
            for _ in 0..2000 {
                if SSE_RELEASED.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            let _ = s.write_all(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n");
            continue;
        }
        let out = route(&seen);
        if s.write_all(&out).is_err() {
            return;
        }
        // An upstream that drops idle keep-alive connections without saying so.
        if seen.target.starts_with("/v1/then-close") {
            return;
        }
    }
}

/// Set once the test has read the first event of `/v1/sse-live`.
static SSE_RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// An LLM-style event stream: escapes, JSON across data lines, CR line ends,
/// a field rule's value as a number, and a text `[DONE]`.
const SSE: &str = "event: delta\r\ndata: {\"note\":\"jane.doe\\u0040example.com\"}\r\n\r\n\
data: {\"customers\":[{\"card\":\r\ndata: 4111111111111111}]}\r\rid: 2\n\
data: {\"tax\":\"123\\u002D45-6789\",\"ok\":\"caf\\u00e9\"}\n\ndata: [DONE]\n\n";

/// JSON lines with escapes.
const NDJSON: &str =
    "{\"pan\":\"4111\\u002D1111-1111-1111\"}\n{\"note\":\"jane\\u0040example.com\",\"score\":1}\n";

fn response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// `body` as a chunked response whose chunk boundaries fall at `cuts`.
fn chunked(content_type: &str, body: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let mut at = 0;
    for &c in cuts.iter().chain([&body.len()]) {
        if c > at {
            out.extend_from_slice(format!("{:x}\r\n", c - at).as_bytes());
            out.extend_from_slice(&body[at..c]);
            out.extend_from_slice(b"\r\n");
            at = c;
        }
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn customers_json() -> String {
    serde_json::json!({
        "customers": [
            { "id": 1, "name": "Jane Roe", "email": "jane@example.com", "ssn": "123-45-6789",
              "card": "4111 1111 1111 1111", "note": "call +1 415 555 0100" },
            { "id": 2, "name": "John Doe", "email": "john.doe@example.org", "ssn": "536-22-8741",
              "card": 5500000000000004u64, "note": "none" },
        ]
    })
    .to_string()
}

/// The forms a careless upstream echoes a credential in: as received,
/// percent-encoded, JSON-escaped, and for Basic decoded.
fn echoed_forms(auth: &str) -> String {
    let pct: String = auth
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let json = auth.replace('-', "\\u002d").replace('/', "\\/");
    let mut out = format!("raw={auth}\npct={pct}\njson={json}\n");
    if let Some(b64) = auth.strip_prefix("Basic ") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        out.push_str(&format!("basic={}\n", String::from_utf8_lossy(&decoded)));
    }
    out
}

fn route(r: &Seen) -> Vec<u8> {
    let (path, query) = r.target.split_once('?').unwrap_or((&r.target, ""));
    let auth = r.header("authorization").unwrap_or_default().to_owned();
    match (r.method.as_str(), path) {
        ("GET", "/v1/echo") => {
            let headers: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            response(
                "200 OK",
                "application/json",
                serde_json::json!({ "headers": headers, "target": r.target }).to_string().as_bytes(),
            )
        }
        ("GET", "/v1/echo-forms") => response("200 OK", "text/html", echoed_forms(&auth).as_bytes()),
        ("GET", "/v1/echo-image") => response("200 OK", "image/png", format!("\u{89}PNG{auth}").as_bytes()),
        ("GET", "/v1/echo-reason") => format!(
            "HTTP/1.1 401 bad key {auth}\r\ncontent-length: 0\r\n\r\n"
        )
        .into_bytes(),
        ("GET", "/v1/echo-header") => format!(
            "HTTP/1.1 200 OK\r\nx-debug-auth: {auth}\r\ncontent-length: 2\r\n\r\nok"
        )
        .into_bytes(),
        ("GET", "/v1/echo-chunked") => {
            let cut: usize = query
                .strip_prefix("cut=")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            chunked("text/plain", format!("you sent {auth} ok").as_bytes(), &[cut])
        }
        ("GET", "/v1/customers") => {
            response("200 OK", "application/json", customers_json().as_bytes())
        }
        ("GET", "/v1/text") => response("200 OK", "text/plain", PII_TEXT.repeat(3).as_bytes()),
        ("GET", "/v1/chunked-text") => {
            // ?cut=N: the body's chunks split at byte N.
            let cut: usize = query
                .strip_prefix("cut=")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            chunked("text/plain", PII_TEXT.as_bytes(), &[cut])
        }
        ("GET", "/v1/chunked-json") => {
            let body = customers_json();
            let cuts: Vec<usize> = (1..body.len()).step_by(7).collect();
            chunked("application/json", body.as_bytes(), &cuts)
        }
        ("GET", "/v1/gzip") => {
            let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-encoding: gzip\r\ncontent-length: 4\r\n\r\n".to_vec();
            out.extend_from_slice(b"\x1f\x8b\x08\x00");
            out
        }
        ("GET", "/v1/then-close") => response("200 OK", "application/json", br#"{"ok":true}"#),
        ("GET", "/v1/gzip2") => {
            let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-encoding: identity\r\ncontent-encoding: gzip\r\ncontent-length: 4\r\n\r\n".to_vec();
            out.extend_from_slice(b"\x1f\x8b\x08\x00");
            out
        }
        ("GET", "/v1/nan") => response(
            "200 OK",
            "application/json",
            br#"{"customers":[{"card":"4111 1111 1111 1111","score":NaN}]}"#,
        ),
        ("GET", "/v1/escaped") => response(
            "200 OK",
            "application/json",
            br#"{"note":"jane.doe\u0040example.com","tax":"123\u002D45-6789","pan":"4111\u002D1111-1111-1111","ok":"caf\u00e9"}"#,
        ),
        ("GET", "/v1/sse") => {
            let cuts: Vec<usize> = (1..SSE.len()).step_by(5).collect();
            chunked("text/event-stream", SSE.as_bytes(), &cuts)
        }
        ("GET", "/v1/ndjson") => response("200 OK", "application/x-ndjson", NDJSON.as_bytes()),
        // A line that is not JSON (Python's parser reads NaN): field rules
        // cannot apply to it.
        ("GET", "/v1/ndjson-nan") => chunked(
            "application/x-ndjson",
            b"{\"ok\":1}\n{\"customers\":[{\"card\":\"4111 1111 1111 1111\",\"x\":NaN}]}\n{\"after\":2}\n",
            &[9],
        ),
        ("GET", "/v1/sse-release") => {
            SSE_RELEASED.store(true, std::sync::atomic::Ordering::SeqCst);
            response("200 OK", "text/plain", b"ok")
        }
        ("GET", "/v1/utf7") => response(
            "200 OK",
            "text/plain; charset=utf-7",
            b"jane+AEA-example.com",
        ),
        ("GET", "/v1/utf16") => {
            let text: Vec<u8> = "\u{feff}{\"e\":\"jane@example.com\"}"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect();
            response("200 OK", "application/json", &text)
        }
        ("GET", "/v1/utf16-text") => {
            let text: Vec<u8> = "jane@example.com"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect();
            chunked("text/plain", &text, &[1, 3])
        }
        ("GET", "/v1/comma-type") => response("200 OK", "image/png, text/plain", b"jane@example.com"),
        ("GET", "/v1/two-types") => b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-type: text/plain\r\ncontent-length: 16\r\n\r\njane@example.com".to_vec(),
        ("GET", "/v1/keys") => response(
            "200 OK",
            "application/json",
            br#"{"users":{"jane@example.com":{"plan":"pro"},"jane\u0040example.org":1}}"#,
        ),
        ("GET", "/v1/sse-nan") => chunked(
            "text/event-stream",
            b"data: {\"ok\":1}\n\ndata: {\"customers\":[{\"card\":\"4111 1111 1111 1111\",\"x\":NaN}]}\n\ndata: {\"after\":2}\n\n",
            &[12],
        ),
        ("GET", "/v1/image") => response("200 OK", "image/png", b"\x89PNG jane@example.com"),
        ("GET", "/v1/hints") => {
            let mut out = b"HTTP/1.1 103 Early Hints\r\nx-contact: jane@example.com\r\n\r\n".to_vec();
            out.extend(response("200 OK", "text/plain", b"ok"));
            out
        }
        ("GET", "/v1/moved") => b"HTTP/1.1 302 Found\r\nlocation: /v1/users/jane@example.com\r\nx-card: 4111 1111 1111 1111\r\ncontent-length: 0\r\n\r\n".to_vec(),
        ("POST" | "PUT", _) => {
            let digest = sha256_hex(&r.body);
            response(
                "200 OK",
                "application/json",
                serde_json::json!({ "received": r.body.len(), "sha256": digest })
                    .to_string()
                    .as_bytes(),
            )
        }
        ("DELETE", _) => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        _ => response(
            "404 Not Found",
            "application/json",
            br#"{"error":"no route"}"#,
        ),
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

const RULES: &str = r#"
[guardrails.api]
rules = [
  { methods = ["DELETE"], path = "/v1/admin/**", action = "deny", message = "the admin API is off limits" },
  { methods = ["DELETE"], path = "/v1/customers/*", action = "approve" },
  { methods = ["PUT"], path = "/v1/orders/*", action = "approve" },
  { methods = ["PATCH"], path = "/v1/orders/*", action = "approve" },
]

[masking.pii]
detectors = ["email", "credit_card", "ssn", "phone"]
fields = { "$.customers[*].card" = "last4" }
columns = { name = "redact" }
"#;

struct Setup {
    keys: Keys,
    sluice: Sluice,
    api: SocketAddr,
    admin: SocketAddr,
    /// No masking, a Basic credential injected.
    plain: SocketAddr,
    /// The api's rules, with `method_override = true`.
    overridable: SocketAddr,
    /// Detectors only: no credential, no field rules.
    bare: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let (up, seen) = upstream();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let (api, admin, plain, overridable) = (free_addr(), free_addr(), free_addr(), free_addr());
    let bare = free_addr();
    let config = format!(
        "[gateway]\nshards = 2\nadmin = \"{admin}\"\nhead_timeout = \"1s\"\n{}\n[audit]\ndir = \"{}\"\ndurability = \"batched\"\n\
         [approvals]\nmode = \"nowait\"\n\
         [[target]]\nname = \"api\"\nprotocol = \"http\"\nlisten = \"{api}\"\nupstream = \"{up}\"\n\
         access = [\"agents\"]\napprovers = [\"leads\"]\nguardrails = \"api\"\nmasking = \"pii\"\n\
         credentials = {{ header = \"Authorization\", value_env = \"API_TOKEN\" }}\n\
         [[target]]\nname = \"plain\"\nprotocol = \"http\"\nlisten = \"{plain}\"\nupstream = \"{up}\"\n\
         access = [\"agents\"]\ncredentials = {{ header = \"Authorization\", value_env = \"PLAIN_AUTH\" }}\n\
         [[target]]\nname = \"overridable\"\nprotocol = \"http\"\nlisten = \"{overridable}\"\nupstream = \"{up}\"\n\
         access = [\"agents\"]\napprovers = [\"leads\"]\nguardrails = \"api\"\nmethod_override = true\n\
         [[target]]\nname = \"bare\"\nprotocol = \"http\"\nlisten = \"{bare}\"\nupstream = \"{up}\"\n\
         access = [\"agents\"]\nmasking = \"detectors\"\n\
         [masking.detectors]\ndetectors = [\"email\", \"credit_card\"]\n{RULES}",
        keys.identity_block(),
        dir.path().join("audit").display(),
    );
    let sluice = Sluice::start_with_env(
        &config,
        &[
            ("API_TOKEN", "Bearer upstream-secret-7"),
            // user:s3cr3t-pass
            ("PLAIN_AUTH", "Basic dXNlcjpzM2NyM3QtcGFzcw=="),
        ],
    );
    Setup {
        keys,
        sluice,
        api,
        admin,
        plain,
        overridable,
        bare,
        seen,
        _dir: dir,
    }
}

impl Setup {
    fn agent(&self) -> String {
        self.keys.token("agent-7", &["agents"])
    }

    fn run_curl(&self, args: &[&str]) -> std::process::Output {
        Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .args(args)
            .output()
            .expect("run curl")
    }

    fn curl(&self, args: &[&str]) -> (String, String) {
        let o = self.run_curl(args);
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// curl's output and exit status (18: a body cut short).
    fn curl_status(&self, args: &[&str]) -> (String, Option<i32>) {
        let o = self.run_curl(args);
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            o.status.code(),
        )
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request reached the upstream")
    }
}

/// Sends raw bytes, returns everything read until the server closes (or 5 s).
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn curl_gets_masked_json_and_the_upstream_gets_only_the_injected_credential() {
    let s = setup();
    let auth = format!("Authorization: Bearer {}", s.agent());
    let (out, err) = s.curl(&["-H", &auth, &s.url("/v1/customers")]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    let c = &v["customers"];
    assert_eq!(c[0]["email"], "j***@*******.com");
    assert_eq!(c[0]["ssn"], "***-**-****");
    assert_eq!(c[0]["card"], "**** **** **** 1111", "field rule last4");
    assert_eq!(
        c[1]["card"], "************0004",
        "a number under a field rule"
    );
    assert_eq!(
        c[0]["name"], "**** ***",
        "a column rule applies to JSON keys"
    );
    assert!(
        !c[0]["note"].as_str().unwrap().contains("555 0100"),
        "phone detector: {}",
        c[0]["note"]
    );
    assert_eq!(c[1]["email"], "j*******@*******.org");
    assert_eq!(c[0]["id"], 1);
    // The caller's token never reaches the upstream; the target's credential does.
    let seen = s.last();
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer upstream-secret-7")
    );
    assert_eq!(seen.header("accept-encoding"), Some("identity"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(!format!("{:?}", seen.headers).contains(&s.agent()));

    // The same through a Rust HTTP client, and chunked JSON split in 7-byte chunks.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&s.url("/v1/chunked-json"))
        .header("authorization", &format!("Bearer {}", s.agent()))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = r.body_mut().read_to_string().unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["customers"][1]["ssn"], "***-**-****");
    assert_eq!(v["customers"][0]["email"], "j***@*******.com");

    // Text bodies stream through the masker; binary media pass as they are.
    let (out, _) = s.curl(&["-H", &auth, &s.url("/v1/text")]);
    assert_eq!(out.len(), PII_TEXT.len() * 3, "same-length masking");
    assert!(
        !out.contains("jane@example.com")
            && !out.contains("4111 1111")
            && !out.contains("123-45-6789"),
        "{out}"
    );
    assert!(
        out.contains("j***@*******.com") && out.contains("**** **** **** 1111"),
        "{out}"
    );
    let (out, _) = s.curl(&["-H", &auth, &s.url("/v1/image")]);
    assert!(out.contains("jane@example.com"));
    // Interim (1xx) answers' header values too.
    let out = raw(
        s.api,
        format!("GET /v1/hints HTTP/1.1\r\nHost: x\r\n{auth}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(
        out.starts_with("HTTP/1.1 103 ")
            && out.contains("x-contact: j***@*******.com\r\n")
            && !out.contains("jane@"),
        "{out}"
    );
    // Header values are masked as well, with no body at all.
    let (out, _) = s.curl(&["-H", &auth, "-D", "-", &s.url("/v1/moved")]);
    assert!(out.starts_with("HTTP/1.1 302"), "{out}");
    assert!(
        out.contains("location: /v1/users/j***@*******.com\r\n")
            && out.contains("x-card: **** **** **** 1111\r\n")
            && !out.contains("jane@")
            && !out.contains("4111 1111"),
        "{out}"
    );
    // A second Content-Encoding field counts too; JSON that cannot be parsed
    // is refused when field rules apply (they could not be).
    let (out, _) = s.curl(&["-H", &auth, "-w", "\n%{http_code}", &s.url("/v1/gzip2")]);
    assert!(out.ends_with("502"), "{out}");
    let (out, _) = s.curl(&["-H", &auth, "-w", "\n%{http_code}", &s.url("/v1/nan")]);
    assert!(out.ends_with("502") && !out.contains("4111 1111"), "{out}");
    // Range requests are not forwarded while masking (a partial body defeats it).
    let (_, _) = s.curl(&[
        "-H",
        &auth,
        "-H",
        "Range: bytes=0-10",
        &s.url("/v1/customers"),
    ]);
    assert_eq!(s.last().header("range"), None);
    // A compressed body is never passed through unmasked.
    let (out, _) = s.curl(&["-H", &auth, "-w", "\n%{http_code}", &s.url("/v1/gzip")]);
    assert!(out.ends_with("502"), "{out}");
    assert!(out.contains("compressed body"), "{out}");
}

/// Text the detectors cannot read byte by byte is refused, whatever its
/// headers say; keys holding values are masked like values.
#[test]
fn unreadable_text_is_refused_and_keys_are_masked() {
    let s = setup();
    let auth = format!("Authorization: Bearer {}", s.agent());
    // Through a target with a credential and field rules, and one with
    // detectors only.
    for base in [format!("http://{}", s.api), format!("http://{}", s.bare)] {
        for path in ["/v1/utf7", "/v1/utf16", "/v1/two-types", "/v1/comma-type"] {
            let (out, err) = s.curl(&[
                "-H",
                &auth,
                "-w",
                "\n%{http_code}",
                &format!("{base}{path}"),
            ]);
            assert!(out.ends_with("502"), "{base}{path}: {out} {err}");
            assert!(!out.contains("jane"), "{base}{path}: {out}");
        }
    }
    // A stream already under way is cut before the first wide byte.
    let o = s.run_curl(&["-H", &auth, &s.url("/v1/utf16-text")]);
    assert!(o.stdout.is_empty(), "{:?}", o.stdout);
    assert_ne!(o.status.code(), Some(0));
    let (out, _) = s.curl(&["-H", &auth, &s.url("/v1/keys")]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(!out.contains("jane"), "{out}");
    assert_eq!(v["users"].as_object().unwrap().len(), 2, "{out}");
}

/// JSON string escapes do not hide values from the detectors: every JSON
/// client decodes `\u0040` to `@`.
#[test]
fn escaped_json_values_are_masked() {
    let s = setup();
    let auth = format!("Authorization: Bearer {}", s.agent());
    let (out, err) = s.curl(&["-H", &auth, &s.url("/v1/escaped")]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    for field in ["note", "tax", "pan"] {
        let got = v[field].as_str().unwrap();
        assert!(got.chars().all(|c| c == '*'), "{field}: {got}");
    }
    assert_eq!(v["ok"], "café");
    assert!(
        out.contains(r#""ok":"caf\u00e9""#),
        "unmasked escapes pass as they came: {out}"
    );
}

/// Server-Sent Events and JSON lines are read as the client reads them: an
/// SSE event's data lines joined, JSON escapes decoded, field rules applied.
#[test]
fn event_streams_are_masked_as_their_clients_read_them() {
    let s = setup();
    let auth = format!("Authorization: Bearer {}", s.agent());
    let (out, err) = s.curl(&["-H", &auth, &s.url("/v1/sse")]);
    for clear in ["jane.doe", "4111111111111111", "123\\u002D45", "jane"] {
        assert!(!out.contains(clear), "{clear} in {out:?} {err}");
    }
    assert!(out.contains("data: [DONE]\n\n"), "{out:?}");
    assert!(
        out.contains(r#"caf\u00e9"#),
        "nothing to mask passes as it came: {out:?}"
    );
    assert!(out.contains(r#"data: {"customers":[{"card":"#), "{out:?}");
    // What an EventSource hands the application parses as JSON.
    let card_event: String = out
        .split("\r\r")
        .next()
        .unwrap()
        .rsplit("\r\n\r\n")
        .next()
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches('\r').strip_prefix("data: ").unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let v: Value =
        serde_json::from_str(&card_event).unwrap_or_else(|e| panic!("{e}: {card_event:?}"));
    assert_eq!(v["customers"][0]["card"], "************1111", "{out:?}");

    // JSON lines, sent with a length, come back re-chunked; also to HTTP/1.0.
    for version in ["--http1.1", "--http1.0"] {
        let (out, err) = s.curl(&["-H", &auth, version, "-i", &s.url("/v1/ndjson")]);
        assert!(out.starts_with("HTTP/1.1 200"), "{out} {err}");
        assert!(!out.contains("4111") && !out.contains("jane"), "{out}");
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(body.lines().count(), 2, "{out}");
        let first: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
        assert!(
            first["pan"].as_str().unwrap().chars().all(|c| c == '*'),
            "{out}"
        );
        if version == "--http1.0" {
            assert!(
                !out.to_ascii_lowercase().contains("transfer-encoding"),
                "{out}"
            );
        } else {
            assert!(
                out.to_ascii_lowercase()
                    .contains("transfer-encoding: chunked"),
                "{out}"
            );
        }
    }
    // A line the field rules cannot read cuts the stream there: the client
    // sees a truncated body (no last chunk), nothing of that line or after.
    let (out, code) = s.curl_status(&["-H", &auth, &s.url("/v1/ndjson-nan")]);
    assert_eq!(out, "{\"ok\":1}\n");
    assert_eq!(code, Some(18), "partial transfer: {out}");
    // The same for SSE data that is not JSON but holds fields.
    let (out, code) = s.curl_status(&["-H", &auth, &s.url("/v1/sse-nan")]);
    assert_eq!(out, "data: {\"ok\":1}\n\n");
    assert_eq!(code, Some(18), "partial transfer: {out}");
}

/// A live stream's events reach the client as they come, not when a window
/// of later bytes has filled: the upstream sends the rest only after the
/// client has read the first event.
#[test]
fn a_live_event_stream_is_not_held_back() {
    let s = setup();
    let mut c = TcpStream::connect(s.api).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET /v1/sse-live HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
        s.agent()
    )
    .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("}\n\n") {
        let mut chunk = [0u8; 4096];
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => panic!(
                "first event not delivered: {}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    let first = String::from_utf8_lossy(&got).into_owned();
    assert!(!first.contains("jane"), "{first}");
    let auth = format!("Authorization: Bearer {}", s.agent());
    s.curl(&["-H", &auth, &s.url("/v1/sse-release")]);
    while !String::from_utf8_lossy(&got).ends_with("0\r\n\r\n") {
        let mut chunk = [0u8; 4096];
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    assert!(
        String::from_utf8_lossy(&got).contains("data: [DONE]"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn a_value_split_across_chunks_is_masked_at_every_boundary() {
    let s = setup();
    let token = s.agent();
    // One keep-alive connection, one request per split point.
    let mut c = TcpStream::connect(s.api).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let expected = {
        let mut m = sluice_masking::Masker::new(
            sluice_masking::Profile::new(&["email", "credit_card", "ssn", "phone"], &[]).unwrap(),
        );
        let mut v = PII_TEXT.as_bytes().to_vec();
        m.mask_value(&mut v, None);
        String::from_utf8(v).unwrap()
    };
    for cut in 0..=PII_TEXT.len() {
        write!(c, "GET /v1/chunked-text?cut={cut} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n").unwrap();
        // Read one chunked response.
        let body = loop {
            let mut headers = [Header::EMPTY; 32];
            if let Ok(Status::Complete(r, n)) = h::parse_response(&buf, &mut headers, 65536) {
                assert_eq!(r.status, 200);
                assert_eq!(h::response_framing(&r, "GET").unwrap(), Framing::Chunked);
                let mut d = ChunkedDecoder::new(1 << 20);
                let mut body = Vec::new();
                let mut at = n;
                loop {
                    let r = d.decode(&buf[at..]).unwrap();
                    body.extend_from_slice(&buf[at..][r.data.clone()]);
                    at += r.consumed;
                    if r.done || r.consumed == 0 {
                        if r.done {
                            buf.drain(..at);
                        }
                        break;
                    }
                }
                if d.is_done() {
                    break body;
                }
            }
            let mut chunk = [0u8; 8192];
            let k = c.read(&mut chunk).unwrap();
            assert!(k > 0, "closed at cut {cut}");
            buf.extend_from_slice(&chunk[..k]);
        };
        assert_eq!(
            String::from_utf8(body).unwrap(),
            expected,
            "split at byte {cut}"
        );
    }
}

#[test]
fn keep_alive_pipelining_and_chunked_uploads() {
    let s = setup();
    let auth = format!("Authorization: Bearer {}", s.agent());
    // curl reuses one connection for two URLs.
    let (out, err) = s.curl(&[
        "-H",
        &auth,
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{num_connects} ",
        &s.url("/v1/text"),
        &s.url("/v1/text"),
    ]);
    assert_eq!(out.trim(), "1 0", "{err}");
    // Two pipelined requests in one write: two answers, in order.
    let token = s.agent();
    let out = raw(
        s.api,
        format!(
            "GET /v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n\
             GET /nope HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let first = out.find("HTTP/1.1 200").expect("first answer");
    let second = out.find("HTTP/1.1 404").expect("second answer");
    assert!(first < second, "{out}");
    // An upstream that silently closes after each response: the next request
    // on the reused connection is sent again on a fresh one, not failed.
    let (out, err) = s.curl(&[
        "-H",
        &auth,
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} ",
        &s.url("/v1/then-close"),
        &s.url("/v1/then-close"),
        &s.url("/v1/then-close"),
    ]);
    assert_eq!(out.trim(), "200 200 200", "{err}");
    // Chunked upload (curl sends the file in chunks): the upstream gets it whole.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let (out, err) = s.curl(&[
        "-H",
        &auth,
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", file.display()),
        &s.url("/v1/upload"),
    ]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!(v["received"], data.len());
    assert_eq!(v["sha256"], sha256_hex(&data));
    assert_eq!(s.last().header("transfer-encoding"), Some("chunked"));
    // Expect: 100-continue is answered by the gateway once the request is admitted.
    let (out, err) = s.curl(&[
        "-H",
        &auth,
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        "hello",
        &s.url("/v1/upload"),
    ]);
    assert!(out.contains("\"received\":5"), "{out} {err}");
    assert_eq!(s.last().header("expect"), None);
}

#[test]
fn smuggling_shapes_are_refused_and_never_forwarded() {
    let s = setup();
    let token = s.agent();
    let before = s.requests();
    for (name, req) in [
        ("CL+TE", format!("POST /v1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX")),
        ("TE+CL", format!("POST /v1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX")),
        ("duplicate CL", format!("POST /v1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nX")),
        ("obs-fold", format!("POST /v1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n")),
        ("bare LF", format!("GET /v1/customers HTTP/1.1\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")),
        ("TE list", format!("POST /v1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")),
        ("dot segment", format!("GET /v1/../v1/admin/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")),
        ("encoded slash", format!("DELETE /v1/admin%2Fusers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")),
        ("absolute form", format!("GET http://evil/v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")),
        ("dot-dot with params", format!("DELETE /v1/x/..;/customers/9 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")),
        ("empty segment by params", format!("DELETE /v1/;/customers/9 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")),
        ("method override", format!("POST /v1/customers/9 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX-HTTP-Method-Override: DELETE\r\n\r\n")),
        ("fragment", format!("GET /v1/export#x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")),
        ("X-Original-URL", format!("GET /v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX-Original-URL: /v1/export\r\n\r\n")),
        ("X-Rewrite-URL", format!("GET /v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX-Rewrite-URL: /v1/export\r\n\r\n")),
        ("X_Original_URL", format!("GET /v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX_Original_URL: /v1/export\r\n\r\n")),
        ("PHP-style _method", format!("POST /v1/customers/9?.method=DELETE HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n")),
        ("_method in the query", format!("POST /v1/customers/9?_method=DELETE HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n")),
        ("encoded _method", format!("POST /v1/customers/9?%5Fm%65thod=DELETE HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n")),
        ("CR before chunk extension", format!("POST /v1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n5\r;x\r\nhello\r\n0\r\n\r\n")),
        ("request trailers", format!("POST /v1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nAuthorization: Bearer stolen\r\n\r\n")),
    ] {
        let out = raw(s.api, req.as_bytes());
        assert!(out.starts_with("HTTP/1.1 400 "), "{name}: {out}");
        assert!(out.contains("\"error\":"), "{name}: a JSON body: {out}");
    }
    let out = raw(s.api, format!("GET /v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").as_bytes());
    assert!(out.starts_with("HTTP/1.1 501 "), "{out}");
    // A head trickled in a byte at a time is cut off at head_timeout (1 s
    // here) even though every single read arrives well within it.
    let mut c = TcpStream::connect(s.api).unwrap();
    let started = std::time::Instant::now();
    c.write_all(b"GET /v1/customers HTTP/1.1\r\n").unwrap();
    // One byte per 100 ms until the gateway answers (writing on after it
    // closed would reset the connection and lose its answer).
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if c.peek(&mut [0u8; 1]).is_ok() || c.write_all(&[*b]).is_err() {
            break;
        }
    }
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed at the deadline"
    );
    assert_eq!(s.requests(), before, "nothing was forwarded");
}

#[test]
fn tokens_rules_and_approvals() {
    let s = setup();
    let before = s.requests();
    let code = |args: &[&str]| {
        let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        a.extend_from_slice(args);
        s.curl(&a).0
    };
    assert_eq!(code(&[&s.url("/v1/customers")]), "401");
    assert_eq!(
        code(&[
            "-H",
            "Authorization: Bearer not.a.token",
            &s.url("/v1/customers")
        ]),
        "401"
    );
    let expired = {
        let now = sluice::identity::unix_now();
        s.keys.key.sign(&serde_json::json!({
            "iss": ISSUER, "aud": "sluice", "sub": "late", "groups": ["agents"],
            "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600,
        }))
    };
    assert_eq!(
        code(&[
            "-H",
            &format!("Authorization: Bearer {expired}"),
            &s.url("/v1/customers")
        ]),
        "401"
    );
    let outsider = s.keys.token("mallory", &["marketing"]);
    assert_eq!(
        code(&[
            "-H",
            &format!("Authorization: Bearer {outsider}"),
            &s.url("/v1/customers")
        ]),
        "403"
    );
    assert_eq!(s.requests(), before, "refused callers reach nothing");

    let auth = format!("Authorization: Bearer {}", s.agent());
    let (out, _) = s.curl(&["-X", "DELETE", "-H", &auth, &s.url("/v1/admin/users/1")]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({ "error": "the admin API is off limits", "rule": 1 })
    );
    // DELETE of a customer needs approval (no-wait mode: 202 with the id),
    // with the requester's reason for the approvers.
    let (out, _) = s.curl(&[
        "-X",
        "DELETE",
        "-H",
        &auth,
        "-H",
        "Sluice-Reason: GDPR erasure, ticket 314",
        "-w",
        "\n%{http_code}",
        &s.url("/v1/customers/7"),
    ]);
    assert!(out.ends_with("202"), "{out}");
    let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let id = v["approval"].as_u64().unwrap();
    assert_eq!(s.requests(), before, "held, not forwarded");
    // A lead approves with their own token through the admin API.
    let lead = s.keys.token("lead-1", &["leads"]);
    let (shown, _) = s.curl(&[
        "-H",
        &format!("Authorization: Bearer {lead}"),
        &format!("http://{}/api/approvals/{id}", s.admin),
    ]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown["justification"], "GDPR erasure, ticket 314",
        "{shown}"
    );
    let o = Command::new(sluice_bin())
        .args(["approvals", "approve", &id.to_string(), "--admin"])
        .arg(format!("http://{}", s.admin))
        .args(["--token", &lead])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The same request again runs once; a different customer needs its own approval.
    assert_eq!(
        code(&[
            "-X",
            "DELETE",
            "-H",
            &auth,
            "-H",
            "Sluice-Reason: GDPR erasure, ticket 314",
            &s.url("/v1/customers/7")
        ]),
        "204"
    );
    assert_eq!(s.last().method, "DELETE");
    assert!(
        !s.last()
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("sluice-reason")),
        "the reason is for Sluice alone"
    );
    assert_eq!(
        code(&["-X", "DELETE", "-H", &auth, &s.url("/v1/customers/7")]),
        "202"
    );
    assert_eq!(
        code(&["-X", "DELETE", "-H", &auth, &s.url("/v1/customers/8")]),
        "202"
    );
    // Spellings a server may resolve to the same resource are held too.
    let before = s.requests();
    for (method, path) in [
        ("delete", "/v1/customers/9"),
        ("DELETE", "/V1/CUSTOMERS/9"),
        ("DELETE", "/v1/customers/9/"),
        ("DELETE", "/v1/%63ustomers/9"),
        ("DELETE", "/v1;x=1/customers/9"),
    ] {
        let url = s.url(path);
        assert_eq!(
            code(&["-X", method, "-H", &auth, "--path-as-is", &url]),
            "202",
            "{method} {path}"
        );
    }
    assert_eq!(s.requests(), before, "none of them was forwarded");
    let url = s.url("/v1/customers/%zz");
    assert_eq!(
        code(&["-X", "DELETE", "-H", &auth, "--path-as-is", &url]),
        "400"
    );

    assert_eq!(code(&["-H", &auth, &s.url("/v1/customers")]), "200");
    // Every request is in the audit log with its method, path and status.
    let recs = wait_for(Duration::from_secs(5), || {
        let r = audit_records(&s);
        r.iter()
            .any(|r| r["type"] == "result" && r["masked"]["email"].as_u64() == Some(2))
            .then_some(r)
    })
    .expect("result records");
    let allowed = recs
        .iter()
        .find(|r| r["type"] == "command" && r["approval"] == id)
        .expect("the approved request's command record");
    assert_eq!(allowed["method"], "DELETE");
    assert_eq!(allowed["text"], "/v1/customers/7");
    assert_eq!(allowed["subject"], "agent-7");
    assert!(recs
        .iter()
        .any(|r| r["type"] == "command" && r["decision"] == "deny" && r["rule"] == 1));
    // Results carry what was masked.
    assert!(recs
        .iter()
        .any(|r| r["type"] == "result" && r["masked"]["email"].as_u64() == Some(2)));
    drop(s.sluice);
}

fn audit_records(s: &Setup) -> Vec<Value> {
    let mut out = Vec::new();
    for seg in sluice::audit::chain::segments(&s._dir.path().join("audit")).unwrap() {
        // A live segment ends in spaces filled ahead of the records.
        for line in std::fs::read_to_string(seg).unwrap().lines() {
            if !line.trim().is_empty() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
    }
    out
}

#[test]
fn method_overrides_in_form_bodies_are_refused() {
    let s = setup();
    let t = s.agent();
    let auth = format!("Authorization: Bearer {t}");
    let url = s.url("/v1/customers/42");
    let before = s.requests();
    for form in [
        &["-d", "_method=DELETE"][..],
        &["-d", "a=1&%5Fmethod=DELETE"][..],
        &["-F", "_method=DELETE"][..],
        &["-F", "x=1", "-F", ".method=DELETE"][..],
        &["-H", "Transfer-Encoding: chunked", "-F", "_method=DELETE"][..],
    ] {
        let (body, _) = s.curl(&[&["-H", &auth, "-X", "POST"][..], form, &[&url]].concat());
        assert!(body.contains("_method"), "{form:?}: {body}");
    }
    // Raw: a part whose data spells ` name="` before the real part, no
    // Content-Type at all (a form to Rack), a media type cut at a comma, two
    // Content-Types, a gzip form.
    let raw_post = |headers: &str, body: &str| {
        let req = format!(
            "POST /v1/customers/42 HTTP/1.1\r\nhost: x\r\n{auth}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        raw(s.api, req.as_bytes())
    };
    let sneaky = "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n name=\"\r\n--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n";
    for (headers, body) in [
        ("content-type: multipart/form-data; boundary=b\r\n", sneaky),
        ("", "_method=DELETE"),
        (
            "content-type: application/x-www-form-urlencoded, x\r\n",
            "_method=DELETE",
        ),
        (
            "content-type: text/plain\r\ncontent-type: application/x-www-form-urlencoded\r\n",
            "a=1",
        ),
        // Laravel reads a JSON body's top-level keys as form fields.
        (
            "content-type: application/json\r\n",
            r#"{"a":1,"_method":"DELETE"}"#,
        ),
        (
            "content-type: application/vnd.api+json\r\n",
            r#"{"\u005fmethod":"DELETE"}"#,
        ),
        // Laravel reads JSON wherever the type mentions `/json`.
        (
            "content-type: text/plain; x=/json\r\n",
            r#"{"_method":"DELETE"}"#,
        ),
        (
            "content-type: application/x-www-form-urlencoded; x=+json\r\n",
            "a=1",
        ),
        // A charset the scans cannot read `_method` in.
        (
            "content-type: application/x-www-form-urlencoded; charset=utf-16\r\n",
            "a=1",
        ),
        (
            "content-type: application/x-www-form-urlencoded\r\ncontent-encoding: gzip\r\n",
            "x",
        ),
    ] {
        let out = raw_post(headers, body);
        assert!(out.starts_with("HTTP/1.1 400"), "{headers:?}: {out}");
    }
    assert_eq!(s.requests(), before, "nothing reached the upstream whole");
    // Forms without an override pass, bodies intact.
    let (body, _) = s.curl(&[
        "-H",
        &auth,
        "-X",
        "POST",
        "-d",
        "note=_method&method=PUT",
        &url,
    ]);
    assert!(body.contains("\"received\":23"), "{body}");
    let (body, _) = s.curl(&["-H", &auth, "-X", "POST", "-F", "file=@/dev/null", &url]);
    assert!(body.contains("received"), "{body}");
    let (body, _) = s.curl(&[
        "-H",
        &auth,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"a":{"_method":"DELETE"},"b":"_method"}"#,
        &url,
    ]);
    assert!(body.contains("\"received\":40"), "{body}");
}

#[test]
fn a_target_may_judge_method_overrides_as_the_method_they_name() {
    let s = setup();
    let t = s.agent();
    let auth = format!("Authorization: Bearer {t}");
    let base = format!("http://{}", s.overridable);
    let status = |args: &[&str]| {
        let (out, _) = s.curl(
            &[
                &["-o", "/dev/null", "-w", "%{http_code}", "-H", &auth][..],
                args,
            ]
            .concat(),
        );
        out
    };
    let before = s.requests();
    // Judged as DELETE: denied, or held for approval (nowait: 202).
    let admin = format!("{base}/v1/admin/x");
    assert_eq!(
        status(&["-X", "POST", "-H", "X-HTTP-Method-Override: DELETE", &admin]),
        "403"
    );
    assert_eq!(
        status(&["-X", "POST", "-H", "x_http_method: delete", &admin]),
        "403"
    );
    let (body, _) = s.curl(&[
        "-H",
        &auth,
        "-X",
        "POST",
        &format!("{base}/v1/customers/42?_method=DELETE"),
    ]);
    assert!(body.contains("\"approval\""), "{body}");
    assert_eq!(s.requests(), before, "nothing judged DELETE ran");
    // Overrides that disagree or name no method are refused.
    let c42 = format!("{base}/v1/customers/42?_method=PUT");
    assert_eq!(
        status(&["-X", "POST", "-H", "X-HTTP-Method-Override: DELETE", &c42]),
        "400"
    );
    assert_eq!(
        status(&[
            "-X",
            "POST",
            "-H",
            "X-HTTP-Method-Override: DEL ETE",
            &format!("{base}/v1/customers/42")
        ]),
        "400"
    );
    // In a form body it is read before the decision and judged the same.
    let c42 = format!("{base}/v1/customers/42");
    assert_eq!(
        status(&["-X", "POST", "-d", "a=1&%5Fmethod=delete", &admin]),
        "403"
    );
    let (body, _) = s.curl(&["-H", &auth, "-d", "note=x&_method=DELETE", &c42]);
    assert!(body.contains("\"approval\""), "{body}");
    // Chunked, split anywhere, spelled as PHP reads it: still DELETE.
    let (body, _) = s.curl(&[
        "-H",
        &auth,
        "-H",
        "transfer-encoding: chunked",
        "-d",
        "[method=DELETE",
        &c42,
    ]);
    assert!(body.contains("\"approval\""), "{body}");
    assert_eq!(s.requests(), before, "nothing judged DELETE ran");
    // Disagreeing with the query's, or with itself: refused.
    assert_eq!(
        status(&["-d", "_method=DELETE", &format!("{c42}?_method=PUT")]),
        "400"
    );
    assert_eq!(status(&["-d", "_method=PUT&_method=DELETE", &c42]), "400");
    // In a multipart body its value is not judged: refused.
    assert_eq!(status(&["-F", "_method=PUT", &c42]), "400");
    // A header override the body disagrees with, even one naming the
    // request's own method: refused.
    assert_eq!(
        status(&[
            "-H",
            "X-HTTP-Method-Override: POST",
            "-d",
            "_method=DELETE",
            &c42
        ]),
        "400"
    );
    // JSON bodies are not judged, only scanned: `_method` there is refused.
    assert_eq!(
        status(&[
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"_method":"PATCH"}"#,
            &c42
        ]),
        "400"
    );
    // Two methods held by different approval rules: neither approval may
    // stand in for the other.
    let (body, _) = s.curl(&[
        "-H",
        &auth,
        "-X",
        "PUT",
        "-H",
        "X-HTTP-Method-Override: PATCH",
        &format!("{base}/v1/orders/7"),
    ]);
    assert!(body.contains("different approvals"), "{body}");
    assert_eq!(s.requests(), before, "nothing judged DELETE ran");
    // Multipart bodies still stream (not read whole), larger than 1 MiB too.
    let big = s._dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 3 << 20]).unwrap();
    let (body, _) = s.curl(&["-H", &auth, "-F", &format!("file=@{}", big.display()), &c42]);
    assert!(body.contains("\"received\":31"), "{body}");
    // Allowed as the method it names: forwarded with the body as sent.
    assert_eq!(status(&["-d", "x=1&_method=PATCH", &c42]), "200");
    assert_eq!(s.last().body, b"x=1&_method=PATCH");
    // An override the rules allow goes through, as sent.
    assert_eq!(
        status(&[
            "-X",
            "POST",
            "-H",
            "X-HTTP-Method-Override: PUT",
            "-d",
            "{}",
            "-H",
            "content-type: application/json",
            &format!("{base}/v1/customers/42")
        ]),
        "200"
    );
    assert_eq!(s.last().header("x-http-method-override"), Some("PUT"));
    // The audit says what was judged.
    let records = audit_records(&s);
    assert!(
        records
            .iter()
            .any(|r| r["method"] == "DELETE" && r["decision"] == "approve"),
        "{records:?}"
    );
}

#[test]
fn the_injected_credential_never_flows_back() {
    let s = setup();
    let t = s.agent();
    let auth = ["-H", &format!("Authorization: Bearer {t}")];
    let secret = "upstream-secret-7";
    let leaked = |text: &str| {
        [
            "upstream-secret-7",
            "upstream%2Dsecret%2D7",
            "upstream\\u002dsecret",
        ]
        .iter()
        .any(|f| text.contains(f))
    };
    // JSON (masked by the profile too), HTML, an image, a response header.
    for path in ["/v1/echo", "/v1/echo-forms", "/v1/echo-image"] {
        let (body, err) = s.curl(&[&auth[..], &[&s.url(path)]].concat());
        assert!(err.is_empty(), "{path}: {err}");
        assert!(!leaked(&body) && body.contains("*****"), "{path}: {body}");
    }
    for path in ["/v1/echo-header", "/v1/echo-reason"] {
        let (head, _) =
            s.curl(&[&auth[..], &["-D", "-", "-o", "/dev/null", &s.url(path)]].concat());
        assert!(
            head.starts_with("HTTP/1.1 ") && !leaked(&head),
            "{path}: {head}"
        );
    }
    // Split across chunks at every byte of the secret.
    let start = "you sent Bearer ".len();
    for cut in start..start + secret.len() + 1 {
        let (body, _) =
            s.curl(&[&auth[..], &[&s.url(&format!("/v1/echo-chunked?cut={cut}"))]].concat());
        assert!(
            body.starts_with("you sent ") && !leaked(&body),
            "cut {cut}: {body}"
        );
    }
    // Without masking, the credential alone is looked for, in every form
    // and every media type; Basic's decoded password too.
    let plain = format!("http://{}", s.plain);
    for path in ["/v1/echo-forms", "/v1/echo-image", "/v1/echo"] {
        let (body, err) = s.curl(&[&auth[..], &[&format!("{plain}{path}")]].concat());
        assert!(err.is_empty(), "{path}: {err}");
        for form in [
            "s3cr3t-pass",
            "s3cr3t%2Dpass",
            "dXNlcjpzM2NyM3QtcGFzcw",
            "s3cr3t\\u002dpass",
        ] {
            assert!(!body.contains(form), "{path}: {form} in {body}");
        }
        assert!(body.contains("*****"), "{path}: {body}");
    }
    // PII is not masked there: only the credential is looked for.
    let (body, _) = s.curl(&[&auth[..], &[&format!("{plain}/v1/text")]].concat());
    assert!(body.contains("jane@example.com"), "{body}");
    // The response records say how often.
    let records = audit_records(&s);
    let hidden: u64 = records
        .iter()
        .filter(|r| {
            r["kind"] == "response" || r["event"] == "response" || r.get("masked").is_some()
        })
        .filter_map(|r| r["masked"]["credential"].as_u64())
        .sum();
    assert!(hidden >= 5, "{records:?}");
}

#[test]
fn https_callers_and_an_https_upstream() {
    // The gateway serves HTTPS to callers (require_tls) and reaches an HTTPS
    // upstream (here: itself, a second Sluice HTTPS listener in front of the
    // plain test server), verifying its certificate against upstream_ca.
    let (plain_up, seen) = upstream();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let (front, back) = (free_addr(), free_addr());
    let config = format!(
        "[gateway]\nshards = 1\n{}\n[tls]\ncert = \"{c}\"\nkey = \"{k}\"\n\
         [[target]]\nname = \"back\"\nprotocol = \"http\"\nlisten = \"{back}\"\nupstream = \"{plain_up}\"\n\
         access = [\"agents\"]\nrequire_tls = true\n\
         credentials = {{ header = \"Authorization\", value_env = \"BACK_TOKEN\" }}\n\
         [[target]]\nname = \"front\"\nprotocol = \"http\"\nlisten = \"{front}\"\nupstream = \"localhost:{}\"\n\
         access = [\"agents\"]\nrequire_tls = true\nupstream_tls = \"verify\"\nupstream_ca = \"{c}\"\n\
         credentials = {{ header = \"Authorization\", value_env = \"FRONT_TOKEN\" }}\n",
        keys.identity_block(),
        back.port(),
        c = cert_path.display(),
        k = key_path.display(),
    );
    // The front's injected credential is a valid token for the back target.
    let inner = keys.token("front-gateway", &["agents"]);
    let _sluice = Sluice::start_with_env(
        &config,
        &[
            ("BACK_TOKEN", "Bearer the-api-key"),
            ("FRONT_TOKEN", &format!("Bearer {inner}")),
        ],
    );
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&cert_path)
        .args([
            "--resolve",
            &format!("localhost:{}:127.0.0.1", front.port()),
        ])
        .args([
            "-H",
            &format!(
                "Authorization: Bearer {}",
                keys.token("agent-1", &["agents"])
            ),
        ])
        .arg(format!("https://localhost:{}/v1/customers", front.port()))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["customers"][0]["id"], 1);
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.header("authorization"), Some("Bearer the-api-key"));
    // Plain HTTP to a TLS-only listener is not served.
    let plain = raw(front, b"GET /v1/customers HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!plain.contains("customers"), "{plain}");
}
