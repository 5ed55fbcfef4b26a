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

/// A raw POST with a cookie: what a forged form would send.
fn post_form(admin: SocketAddr, path: &str, cookie: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {admin}\r\nCookie: sluice_console={cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out)
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
    let card = b.wait("article.request", 20);
    let _ = card;
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
    requester.open(&link);
    requester.wait("#approvals", 10);
    let agent_cookie = requester.cookie("sluice_console");
    // Used once.
    let reused = ureq::get(&link).call();
    assert!(
        matches!(reused, Err(ureq::Error::StatusCode(410))),
        "a link works once: {reused:?}"
    );
    let held = psql_bg(
        s.db,
        &agent,
        "second-one",
        "DELETE FROM orders WHERE id = 2",
    );
    requester.wait("article.request", 20);
    let src = requester.source();
    assert!(src.contains("This is your request"), "{src}");
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
    );
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains("cannot decide on their own request"),
        "{page}"
    );
    // Without the CSRF token, even an eligible approver's cookie does nothing.
    let (status, page) = post_form(
        s.admin,
        &format!("/console/approvals/{id}/approve"),
        &cookie,
        "comment=forged",
    );
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("CSRF"), "{page}");

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
    // The requester is not an auditor.
    requester.open(&format!("{console}/console/audit"));
    assert!(requester.source().contains("for the admin groups"));

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
