//! The web console in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`) against the real binary, a real
//! PostgreSQL and psql as the requester. Screenshots of each page go to
//! `target/console-screenshots/`.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::pg::*;
use support::*;

const RULES: &str = r#"
[guardrails.prod]
rules = [
  { kinds = ["delete"], action = "approve" },
]
"#;

struct Setup {
    pg: PgCluster,
    keys: Keys,
    sluice: Sluice,
    db: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let pg = PgCluster::start();
    pg.psql(
        "CREATE TABLE orders (id int primary key, note text); \
         INSERT INTO orders SELECT g, 'n' FROM generate_series(1, 50) g",
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let (db, admin) = (free_addr(), free_addr());
    let config = format!(
        "[gateway]\nshards = 2\nadmin = \"{admin}\"\n\
         {}admin_groups = [\"admins\"]\n\
         [audit]\ndir = \"{}\"\ndurability = \"strict\"\n\
         [approvals]\ntimeout = \"60s\"\n{}{RULES}",
        keys.identity_block(),
        dir.path().join("audit").display(),
        pg_target(
            "db",
            db,
            pg.addr(),
            "guardrails = \"prod\"\napprovers = [\"dba\"]"
        ),
    );
    let sluice = Sluice::start(&config);
    Setup {
        pg,
        keys,
        sluice,
        db,
        admin,
        _dir: dir,
    }
}

/// A headless Chromium session over WebDriver.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian: chromium-driver; ./test.sh installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into();
        let ready = wait_for(Duration::from_secs(20), || {
            agent.get(&format!("{base}/status")).call().ok().map(|_| ())
        });
        assert!(ready.is_some(), "chromedriver did not start");
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            agent,
        };
        let v = b.post(
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"]
                }
            }}}),
        );
        b.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        b
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let url = if self.session.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut r = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body.to_string())
            .expect("WebDriver call");
        serde_json::from_str(&r.body_mut().read_to_string().expect("WebDriver reply"))
            .expect("WebDriver JSON")
    }

    fn get(&self, path: &str) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut r = self.agent.get(&url).call().expect("WebDriver call");
        serde_json::from_str(&r.body_mut().read_to_string().expect("WebDriver reply"))
            .expect("WebDriver JSON")
    }

    fn open(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    fn source(&self) -> String {
        self.get("/source")["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching `css`, if there is one now.
    fn find(&self, css: &str) -> Option<String> {
        let v = self.post("/element", json!({"using": "css selector", "value": css}));
        // A found element is `{"element-6066-...": ID}`; a miss is an error object.
        v["value"]["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .map(str::to_owned)
    }

    /// Waits (without reloading) until `css` matches.
    fn wait(&self, css: &str, secs: u64) -> String {
        wait_for(Duration::from_secs(secs), || self.find(css))
            .unwrap_or_else(|| panic!("`{css}` never appeared in:\n{}", self.source()))
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.wait(css, 10);
        self.post(&format!("/element/{e}/value"), json!({ "text": text }));
    }

    fn click(&self, css: &str) {
        let e = self.wait(css, 10);
        self.post(&format!("/element/{e}/click"), json!({}));
    }

    fn text(&self, css: &str) -> String {
        let e = self.wait(css, 10);
        self.get(&format!("/element/{e}/text"))["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn cookie(&self, name: &str) -> String {
        self.get(&format!("/cookie/{name}"))["value"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Moves the pointer to the window's corner.
    fn park_pointer(&self) {
        self.post(
            "/actions",
            json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                "actions": [{"type": "pointerMove", "duration": 0, "x": 0, "y": 0, "origin": "viewport"}]}]}),
        );
    }

    fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height }));
    }

    /// Saves the page as `target/console-screenshots/NAME.png`.
    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.get("/screenshot")["value"]
            .as_str()
            .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap())
            .expect("a screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(&format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A request's state through the approvals API.
fn s_request_state(s: &Setup, token: &str, id: u64) -> String {
    let r = ureq::get(&format!("http://{}/api/approvals/{id}", s.admin))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    let v: Value = serde_json::from_str(&r.into_body().read_to_string().unwrap()).unwrap();
    v["state"].as_str().unwrap_or_default().to_owned()
}

/// A raw form POST with a cookie, as a page of `origin` (or a forged form
/// with no `Origin`) would send it: `(status, whole response)`.
fn post_form(
    admin: SocketAddr,
    path: &str,
    cookie: &str,
    body: &str,
    origin: Option<&str>,
) -> (u16, String) {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    http_exchange(
        admin,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {admin}\r\n{origin}Cookie: sluice_console={cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn psql_bg(
    addr: SocketAddr,
    token: &str,
    reason: &str,
    sql: &str,
) -> thread::JoinHandle<std::process::Output> {
    let (token, sql, options) = (
        token.to_owned(),
        sql.to_owned(),
        format!("-c sluice.reason={reason}"),
    );
    thread::spawn(move || psql_with_env(addr, &token, &[("PGOPTIONS", &options)], &["-c", &sql]))
}

#[test]
fn approvers_decide_and_auditors_search_in_a_real_browser() {
    let s = setup();
    let console = format!("http://{}", s.admin);
    let bob = s.keys.token("bob", &["dba", "admins"]);
    let agent = s.keys.token("agent-9", &["agents"]);
    let b = Browser::start();
    let mut shots = Vec::new();

    // Sign-in with a pasted token.
    b.open(&format!("{console}/"));
    b.wait("form.signin", 10);
    shots.push(b.screenshot("1-signin"));
    b.type_into("#token", &bob);
    b.click("form.signin button");
    b.wait("#approvals", 10);
    // (The live list waits while the pointer rests on it: move it away, as a
    // person watching for news would.)
    b.park_pointer();
    assert!(b.source().contains("Nothing waits for a decision"));
    let cookie = b.cookie("sluice_console");
    assert_eq!(cookie.len(), 64, "a session cookie");

    // A held statement appears without a reload (server-sent events).
    let held = psql_bg(
        s.db,
        &agent,
        "cleanup-INC-42",
        "DELETE FROM orders WHERE id = 1",
    );
    b.wait("article.request", 20);
    let text = b.text("article.request");
    assert!(text.contains("DELETE FROM orders WHERE id = 1"), "{text}");
    assert!(text.contains("agent-9"), "{text}");
    assert!(
        text.contains("cleanup-INC-42"),
        "the requester's reason: {text}"
    );
    assert!(text.contains("0 of 1 approval"), "{text}");
    shots.push(b.screenshot("2-approvals-pending"));
    // Readable on a phone.
    b.resize(360, 740);
    shots.push(b.screenshot("3-approvals-phone"));
    b.resize(1200, 900);

    // Approve with a comment: the waiting psql completes.
    b.type_into(
        "article.request input[name=comment]",
        "checked with the owner",
    );
    b.click("article.request button.approve");
    b.wait("p.flash", 10);
    assert!(b.text("p.flash").contains("approved"));
    let out = held.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.pg.psql("SELECT count(*) FROM orders WHERE id = 1"), "0");
    assert!(
        b.source().contains("checked with the owner"),
        "the decision in the history"
    );
    shots.push(b.screenshot("4-approvals-decided"));

    // The requester, signed in with a one-time link, sees their own request
    // without buttons; the server refuses a forged vote anyway.
    let o = Command::new(sluice_bin())
        .args(["console", "link", "--admin", &console, "--token", &agent])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let link = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    assert!(
        link.starts_with(&format!("{console}/console/link/")),
        "{link}"
    );
    let requester = Browser::start();
    // Opening the link (as a chat preview would) spends nothing; its button does.
    let preview = ureq::get(&link).call().expect("the link's page");
    assert_eq!(preview.status(), 200);
    requester.open(&link);
    requester.click("form.link button");
    requester.wait("#approvals", 10);
    let agent_cookie = requester.cookie("sluice_console");
    // Used once.
    let path = link.trim_start_matches(&console).to_owned();
    let (status, _) = post_form(s.admin, &path, "", "", None);
    assert_eq!(status, 410, "a link works once");
    let held = psql_bg(
        s.db,
        &agent,
        "<script>alert(1)</script>\"onmouseover=x",
        "DELETE FROM orders WHERE id = 2",
    );
    requester.wait("article.request", 20);
    let src = requester.source();
    assert!(src.contains("This is your request"), "{src}");
    assert!(
        !src.contains("<script>alert"),
        "markup in a reason is text: {src}"
    );
    assert!(requester
        .text("article.request .justification")
        .contains("<script>alert(1)</script>"));
    assert!(
        requester.find("article.request form.vote").is_none(),
        "no buttons on one's own request"
    );
    shots.push(requester.screenshot("5-requester-own-request"));
    let id: u64 = requester
        .text("article.request h3")
        .trim_start_matches('#')
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let csrf = {
        let src = requester.source();
        let at = src
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF token in the page")
            + 19;
        src[at..at + 64].to_owned()
    };
    let (status, page) = post_form(
        s.admin,
        &format!("/console/approvals/{id}/approve"),
        &agent_cookie,
        &format!("csrf={csrf}&comment=mine"),
        None,
    );
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains("cannot decide on their own request"),
        "{page}"
    );
    // Someone signed in who may not see the request learns nothing of it,
    // not even that it exists (as through the admin API).
    let outsider = s.keys.token("eve", &["outsiders"]);
    let (status, signed_in) = post_form(
        s.admin,
        "/console/signin",
        "",
        &format!("token={outsider}"),
        None,
    );
    assert!(status < 400, "{signed_in}");
    let eve_cookie = signed_in
        .split("sluice_console=")
        .nth(1)
        .and_then(|c| c.split(';').next())
        .expect("a console cookie")
        .to_owned();
    let (_, eve_page) = http_exchange(
        s.admin,
        &format!(
            "GET /console/approvals HTTP/1.1\r\nHost: {}\r\nCookie: sluice_console={eve_cookie}\r\nConnection: close\r\n\r\n",
            s.admin
        ),
    );
    let at = eve_page
        .find("name=\"csrf\" value=\"")
        .expect("a CSRF token in the page")
        + 19;
    let eve_csrf = &eve_page[at..at + 64];
    let (status, page) = post_form(
        s.admin,
        &format!("/console/approvals/{id}/approve"),
        &eve_cookie,
        &format!("csrf={eve_csrf}"),
        None,
    );
    assert_eq!(status, 404, "{page}");
    assert!(
        page.contains(&format!("no approval request {id}")),
        "{page}"
    );
    // Without the CSRF token, even an eligible approver's cookie does nothing.
    let (status, page) = post_form(
        s.admin,
        &format!("/console/approvals/{id}/approve"),
        &cookie,
        "comment=forged",
        None,
    );
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("CSRF"), "{page}");
    // The right token from another site's page: refused by its Origin.
    let bob_csrf = {
        let src = b.source();
        let at = src
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF token in the page")
            + 19;
        src[at..at + 64].to_owned()
    };
    let (status, page) = post_form(
        s.admin,
        &format!("/console/approvals/{id}/approve"),
        &cookie,
        &format!("csrf={bob_csrf}&comment=cross-site"),
        Some("https://evil.example"),
    );
    assert_eq!(status, 403, "{page}");
    // Nor may another site sign a browser in with its own token.
    let (status, _) = post_form(
        s.admin,
        "/console/signin",
        "",
        &format!("token={agent}"),
        Some("https://evil.example"),
    );
    assert_eq!(status, 403);
    assert_eq!(
        s_request_state(&s, &bob, id),
        "pending",
        "nothing was decided"
    );

    // Bob denies with a comment: it reaches the requester's error.
    b.open(&format!("{console}/console/approvals"));
    b.wait("article.request", 10);
    b.type_into(
        "article.request input[name=comment]",
        "not during the freeze",
    );
    b.click("article.request button.deny");
    b.wait("p.flash", 10);
    let out = held.join().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("denied by bob"), "{err}");
    assert!(err.contains("not during the freeze"), "{err}");
    assert_eq!(s.pg.psql("SELECT count(*) FROM orders WHERE id = 2"), "1");

    // Audit: search finds the statement, export downloads, verify says ok.
    b.open(&format!("{console}/console/audit?text=DELETE+FROM+orders"));
    b.wait("ol.records", 10);
    let src = b.source();
    assert!(src.contains("DELETE FROM orders WHERE id = 1"), "{src}");
    shots.push(b.screenshot("6-audit-search"));
    let export = ureq::get(&format!(
        "{console}/console/audit/export?format=csv&text=DELETE+FROM+orders"
    ))
    .header("Cookie", &format!("sluice_console={cookie}"))
    .call()
    .expect("export");
    assert!(export
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("attachment") && v.contains(".csv")));
    let csv = export.into_body().read_to_string().unwrap();
    assert!(csv.starts_with("seq,"), "{csv}");
    assert!(csv.contains("DELETE FROM orders WHERE id = 1"), "{csv}");
    b.click("form.inline button[type=submit]:not(.link)");
    let result = b.text("#verify-result");
    assert!(result.starts_with("ok:"), "{result}");
    shots.push(b.screenshot("7-audit-verify"));
    // A page number from far away shows the oldest page, without reading
    // the whole log into memory (nor overflowing).
    let far = ureq::get(&format!(
        "{console}/console/audit?page=18446744073709551615"
    ))
    .header("Cookie", &format!("sluice_console={cookie}"))
    .call()
    .expect("a far page");
    assert_eq!(far.status(), 200);
    // The requester is not an auditor.
    requester.open(&format!("{console}/console/audit"));
    assert!(requester.source().contains("for the admin groups"));

    // Sessions: the recordings list, and a replay in the page.
    let sessions = s._dir.path().join("audit").join("sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    std::fs::write(
        sessions.join("web1-4ce8a609-1.cast"),
        concat!(
            r#"{"version":2,"width":80,"height":24,"timestamp":1796000000,"title":"bob@web1: bash"}"#, "\n",
            r#"[0.1,"o","\u001b[1;32mbob@web1\u001b[0m:~$ "]"#, "\n",
            r#"[0.5,"o","uptime\r\n 10:00:00 up 3 days, load average: 0.01\r\n"]"#, "\n",
            r#"[0.9,"o","bob@web1:~$ exot\b\bit\r\n"]"#, "\n",
        ),
    )
    .unwrap();
    b.open(&format!("{console}/console/sessions"));
    b.click("ol.records a");
    b.wait(".player button.play:not([hidden])", 10);
    let screen = b.text(".player .screen");
    assert!(screen.contains("bob@web1:~$ uptime"), "{screen}");
    assert!(screen.contains("load average: 0.01"), "{screen}");
    assert!(
        screen.contains("bob@web1:~$ exit"),
        "the player applies backspaces: {screen}"
    );
    assert!(
        !screen.contains("[1;32m"),
        "escape sequences are drawn, not shown: {screen}"
    );
    b.click(".player button.play");
    shots.push(b.screenshot("8-session-replay"));
    for bad in ["..%2F..%2Fetc%2Fpasswd", "..", ".%2E%2Fsecret.cast"] {
        let r = ureq::get(&format!("{console}/console/sessions/{bad}"))
            .header("Cookie", &format!("sluice_console={cookie}"))
            .call();
        assert!(
            matches!(r, Err(ureq::Error::StatusCode(404))),
            "{bad}: {r:?}"
        );
    }

    // Every page carries the strict policy.
    let r = ureq::get(&format!("{console}/console/signin"))
        .call()
        .unwrap();
    let csp = r
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    eprintln!("screenshots: {shots:?}");
    drop(s.sluice);
}

/// A small OpenID provider for the sign-in test: discovery, an authorize
/// endpoint that signs `olivia` in at once, and a token endpoint that checks
/// the code, the redirect URI and the PKCE verifier.
struct Provider {
    url: String,
    /// Codes traded for tokens (each works once).
    traded: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn provider(keys: &'static Keys, client_id: &'static str) -> Provider {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let traded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (issuer, count) = (url.clone(), traded.clone());
    // code → (challenge, redirect_uri)
    let codes: Arc<Mutex<std::collections::HashMap<String, (String, String)>>> = Default::default();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut length = 0;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let target = line.split(' ').nth(1).unwrap_or("/").to_owned();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let params = |s: &str| -> std::collections::HashMap<String, String> {
                s.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), decode(v)))
                    .collect()
            };
            let reply = match path {
                "/.well-known/openid-configuration" => json_reply(
                    200,
                    &json!({
                        "issuer": issuer,
                        "authorization_endpoint": format!("{issuer}/authorize"),
                        "token_endpoint": format!("{issuer}/token"),
                        "jwks_uri": format!("{issuer}/jwks"),
                    }),
                ),
                "/authorize" => {
                    let q = params(query);
                    let ok = q.get("response_type").map(String::as_str) == Some("code")
                        && q.get("client_id").map(String::as_str) == Some(client_id)
                        && q.get("code_challenge_method").map(String::as_str) == Some("S256")
                        && q.get("scope")
                            .is_some_and(|s| s.split(' ').any(|x| x == "openid"));
                    if !ok {
                        json_reply(400, &json!({"error": "invalid_request", "got": q}))
                    } else {
                        let code = format!("code-{}", codes.lock().unwrap().len() + 1);
                        let redirect = q["redirect_uri"].clone();
                        codes.lock().unwrap().insert(
                            code.clone(),
                            (q["code_challenge"].clone(), redirect.clone()),
                        );
                        format!(
                            "HTTP/1.1 302 Found\r\nLocation: {redirect}?code={code}&state={}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            q["state"]
                        )
                    }
                }
                "/token" => {
                    let f = params(&String::from_utf8_lossy(&body));
                    let found = f.get("code").and_then(|c| codes.lock().unwrap().remove(c));
                    match found {
                        Some((challenge, redirect))
                            if f.get("redirect_uri") == Some(&redirect)
                                && f.get("grant_type").map(String::as_str)
                                    == Some("authorization_code")
                                && f.get("code_verifier").is_some_and(|v| {
                                    use sha2::Digest;
                                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                                        .encode(sha2::Sha256::digest(v.as_bytes()))
                                        == challenge
                                }) =>
                        {
                            count.fetch_add(1, Ordering::SeqCst);
                            let now = sluice::identity::unix_now();
                            let token = keys.key.sign(&json!({
                                "iss": issuer, "aud": "sluice", "sub": "olivia", "groups": ["dba"],
                                "iat": now, "nbf": now, "exp": now + 600,
                            }));
                            json_reply(
                                200,
                                &json!({"access_token": token, "token_type": "Bearer", "expires_in": 600}),
                            )
                        }
                        _ => json_reply(400, &json!({"error": "invalid_grant"})),
                    }
                }
                _ => json_reply(404, &json!({"error": "not found"})),
            };
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    Provider { url, traded }
}

fn json_reply(status: u16, v: &Value) -> String {
    let body = v.to_string();
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() + 1 => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn sign_in_with_the_identity_provider_uses_pkce_and_each_callback_once() {
    let dir = tempfile::tempdir().unwrap();
    let keys: &'static Keys = Box::leak(Box::new(Keys::new(dir.path())));
    let idp = provider(keys, "sluice-console");
    let admin = free_addr();
    let config = format!(
        "[gateway]\nshards = 1\nadmin = \"{admin}\"\n\
         [identity]\nissuer = \"{}\"\naudience = \"sluice\"\njwks = \"file:{}\"\n\
         [console]\nclient_id = \"sluice-console\"\nurl = \"http://{admin}\"\n\
         [[target]]\nname = \"cache\"\nprotocol = \"tcp\"\nlisten = \"{}\"\nupstream = \"127.0.0.1:9\"\naccess = [\"*\"]\n",
        idp.url,
        keys.jwks_path.display(),
        free_addr(),
    );
    let _sluice = Sluice::start(&config);
    let b = Browser::start();
    b.open(&format!("http://{admin}/console/signin"));
    b.wait("#oidc", 10);
    shots_dir_note(b.screenshot("9-signin-with-provider"));
    b.click("#oidc");
    b.wait("#approvals", 20);
    assert!(b.text("nav .who").contains("olivia"), "{}", b.source());
    assert_eq!(idp.traded.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A callback is good once: replayed, or with a state this console never
    // issued, it signs nobody in.
    let replay = format!("http://{admin}/console/oidc/callback?code=code-1&state=never-issued");
    let r = ureq::get(&replay).call();
    assert!(matches!(r, Err(ureq::Error::StatusCode(400))), "{r:?}");
    let r = ureq::get(&format!(
        "http://{admin}/console/oidc/callback?error=access_denied"
    ))
    .call();
    assert!(matches!(r, Err(ureq::Error::StatusCode(401))), "{r:?}");
    // By hand, without a browser: each step's redirect read, not followed.
    let http = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .new_agent();
    let header = |r: &ureq::http::Response<ureq::Body>, name: &str| {
        r.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let flow = || {
        let started = http
            .get(&format!("http://{admin}/console/oidc/start"))
            .call()
            .unwrap();
        let location = header(&started, "location").remove(0);
        assert!(
            location.contains("code_challenge_method=S256"),
            "{location}"
        );
        let browser = header(&started, "set-cookie")
            .into_iter()
            .find(|c| c.starts_with("sluice_oidc="))
            .expect("the flow's cookie");
        assert!(
            browser.contains("HttpOnly") && browser.contains("SameSite=Lax"),
            "{browser}"
        );
        let browser = browser.split(';').next().unwrap().to_owned();
        let at_idp = http.get(&location).call().unwrap();
        let callback = header(&at_idp, "location").remove(0);
        (browser, callback)
    };
    // The flow's own browser signs in; the same callback again does not.
    let (browser, callback) = flow();
    let first = http
        .get(&callback)
        .header("Cookie", &browser)
        .call()
        .unwrap();
    assert_eq!(first.status(), 200);
    assert!(header(&first, "set-cookie")
        .iter()
        .any(|c| c.starts_with("sluice_console=")));
    let again = http
        .get(&callback)
        .header("Cookie", &browser)
        .call()
        .unwrap();
    assert_eq!(again.status(), 400, "a callback works once");
    assert_eq!(idp.traded.load(std::sync::atomic::Ordering::SeqCst), 2);
    // A callback opened in another browser (a victim sent the attacker's
    // callback, or an attacker holding someone's) signs nobody in.
    let (_, callback) = flow();
    let elsewhere = http.get(&callback).call().unwrap();
    assert_eq!(elsewhere.status(), 400);
    assert!(header(&elsewhere, "set-cookie")
        .iter()
        .all(|c| !c.starts_with("sluice_console=")));
    assert_eq!(
        idp.traded.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "no code traded"
    );
    // A code the provider never gave, with a real state: no session.
    let (browser, callback) = flow();
    let forged = callback.replace("code=code-", "code=forged-");
    let r = http.get(&forged).header("Cookie", &browser).call().unwrap();
    assert_eq!(r.status(), 502);
    assert!(header(&r, "set-cookie")
        .iter()
        .all(|c| !c.starts_with("sluice_console=")));
}

fn shots_dir_note(path: PathBuf) {
    eprintln!("screenshot: {}", path.display());
}

/// `admin_tls = true`: the API and the console speak TLS with `[tls]`'s
/// certificate, and the session cookie is `Secure`.
#[test]
fn the_admin_listener_serves_tls_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let admin = free_addr();
    let config = format!(
        "[gateway]\nshards = 1\nadmin = \"{admin}\"\nadmin_tls = true\n{}\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n\
         [[target]]\nname = \"cache\"\nprotocol = \"tcp\"\nlisten = \"{}\"\nupstream = \"127.0.0.1:9\"\naccess = [\"*\"]\n",
        keys.identity_block(),
        cert_path.display(),
        key_path.display(),
        free_addr(),
    );
    let _sluice = Sluice::start(&config);
    let curl = |args: &[&str]| {
        let o = Command::new("curl")
            .args(["-s", "--max-time", "10", "--cacert"])
            .arg(&cert_path)
            .args([
                "--resolve",
                &format!("localhost:{}:127.0.0.1", admin.port()),
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let health = curl(&[&format!("https://localhost:{}/healthz", admin.port())]);
    assert!(health.contains("\"ok\""), "{health}");
    let token = keys.token("bob", &["dba"]);
    let head = curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "--data-urlencode",
        &format!("token={token}"),
        &format!("https://localhost:{}/console/signin", admin.port()),
    ]);
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Secure"),
        "{cookie}"
    );
    // Plain HTTP gets nothing.
    let plain = Command::new("curl")
        .args(["-s", "--max-time", "5", &format!("http://{admin}/healthz")])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("\"ok\""));
}
