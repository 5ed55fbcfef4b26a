//! `sluice demo`: the whole product on a fresh machine, with nothing to configure.
//!
//! It makes a state directory (keys, tokens for three demo people, a commented
//! config, the audit log), starts a throw-away PostgreSQL seeded with fake PII
//! (if the server binaries are installed), a throw-away OpenSSH `sshd` that
//! logs in the current user (if OpenSSH is installed) and a small built-in
//! JSON API, then runs the gateway in front of them and prints a walkthrough
//! whose commands work as printed. Ctrl-C stops everything it started and
//! leaves the state directory for inspection; running it again recreates the
//! throw-away parts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::identity::token::{Claims, DevKey};
use crate::localserver::{as_user, is_root, pg_bin, which};

const ISSUER: &str = "https://demo.sluice.local/";
/// The demo API's own credential; callers never see it (Sluice injects it).
const API_KEY: &str = "demo-api-key-b7f3c1";

/// Ports tried first (the printed commands use whatever was free).
const PG_PORT: u16 = 15432;
const HTTP_PORT: u16 = 18080;
const ADMIN_PORT: u16 = 19470;
const SSH_PORT: u16 = 12222;

/// The three demo people.
const PEOPLE: &[(&str, &str, &[&str])] = &[
    ("agent", "agent-7", &["agents"]),
    ("approver", "dana", &["dba", "leads"]),
    ("sre", "sam", &["sre", "admins"]),
];

pub fn run(dir: PathBuf, fresh_ports: bool) -> i32 {
    match start(&dir, fresh_ports) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice demo: {e}");
            1
        }
    }
}

fn start(dir: &Path, fresh_ports: bool) -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    // Throw-away parts are recreated; the audit log (and its signing key) stays.
    // (`pg` is where earlier versions kept the throw-away cluster.)
    for stale in [
        "keys",
        "tokens",
        "pg",
        "sshd",
        "host",
        "known_hosts",
        "demo.toml",
    ] {
        let p = dir.join(stale);
        let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
    }
    let (key_path, jwks_path) = crate::identity::token::keygen(&dir.join("keys"))?;
    let key = DevKey::load(&key_path)?;
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).map_err(|e| e.to_string())?;
    for (file, sub, groups) in PEOPLE {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let token = key.sign(
            &Claims {
                subject: sub,
                groups: &groups,
                audience: "sluice",
                issuer: ISSUER,
                ttl_secs: 12 * 3600,
                now: crate::identity::unix_now(),
            }
            .to_json(),
        );
        // The tokens log in (a shell on the demo's sshd among them): the
        // demo's user only.
        use std::os::unix::fs::OpenOptionsExt;
        let path = tokens.join(file);
        let _ = std::fs::remove_file(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, token.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }

    let port = |preferred: u16| -> Result<u16, String> {
        if fresh_ports {
            return free_port();
        }
        if TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
            return Ok(preferred);
        }
        let p = free_port()?;
        println!("(port {preferred} is taken: using {p} instead; the commands below use it)");
        Ok(p)
    };
    let (pg_listen, http_listen, admin) = (port(PG_PORT)?, port(HTTP_PORT)?, port(ADMIN_PORT)?);

    let api = demo_api()?;
    let pg = match Postgres::start() {
        Ok(pg) => Some(pg),
        Err(e) => {
            println!("PostgreSQL part skipped: {e}\n");
            None
        }
    };
    // The sshd (stopped when dropped) and the target in front of it.
    let ssh_part = Sshd::start(&dir).and_then(|sshd| {
        let target = SshTarget::new(&dir, &sshd, port(SSH_PORT)?)?;
        Ok((sshd, target))
    });
    let ssh_part = match ssh_part {
        Ok(part) => Some(part),
        Err(e) => {
            println!("SSH part skipped: {e}\n");
            None
        }
    };
    let ssh = ssh_part.as_ref().map(|(_, target)| target);
    let config = config(
        &dir,
        &jwks_path,
        pg.as_ref().map(|p| (p.port, pg_listen)),
        api,
        http_listen,
        admin,
        ssh,
    );
    let config_path = dir.join("demo.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    // The upstream API's key, read by the config's `value_env`.
    std::env::set_var("SLUICE_DEMO_API_KEY", format!("Bearer {API_KEY}"));
    if std::env::var_os("SLUICE_LOG").is_none() {
        std::env::set_var("SLUICE_LOG", "warn");
    }
    walkthrough(&exe, &dir, pg.is_some(), pg_listen, http_listen, admin, ssh);
    let _ = std::io::stdout().flush();

    let served = crate::runtime::serve(config_path.clone());
    if let Some(pg) = pg {
        pg.stop();
    }
    drop(ssh_part);
    // stdout may be gone by now (a closed terminal or pipe): never panic on it.
    let _ = writeln!(
        std::io::stdout(),
        "\nsluice demo stopped; its state stays in {} (audit log in audit/)",
        dir.display()
    );
    match served {
        Ok(()) => Ok(0),
        Err(e) => Err(format!("{e:#}")),
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// The gateway's configuration, written out (with comments) for the user to read.
fn config(
    dir: &Path,
    jwks: &Path,
    pg: Option<(u16, u16)>,
    api: SocketAddr,
    http_listen: u16,
    admin: u16,
    ssh: Option<&SshTarget>,
) -> String {
    let mut c = format!(
        r#"# The configuration `sluice demo` runs (written by it; see config/README.md).
[gateway]
shards = 2
admin = "127.0.0.1:{admin}"        # /healthz, /metrics, /api/approvals
drain_timeout = "2s"

[identity]
issuer = "{ISSUER}"
audience = "sluice"
jwks = "file:{jwks}"               # the demo's dev key; a real IdP's JWKS URL in production
admin_groups = ["admins"]

[audit]
dir = "{audit}"
durability = "strict"              # a command runs only once its record is on disk

[approvals]
timeout = "300s"
grant_ttl = "10m"

# The HTTP API: callers present their token; Sluice injects the API's own key.
[[target]]
name = "customers-api"
protocol = "http"
listen = "127.0.0.1:{http_listen}"
upstream = "{api}"
credentials = {{ header = "Authorization", value_env = "SLUICE_DEMO_API_KEY" }}
access = ["agents", "sre"]
approvers = ["leads"]
approval_mode = "nowait"           # HTTP clients get 202 and retry once approved
guardrails = "api"
masking = "pii"
"#,
        jwks = jwks.display(),
        audit = dir.join("audit").display(),
    );
    if let Some((up, pg_listen)) = pg {
        c.push_str(&format!(
            r#"
# PostgreSQL: the password is the caller's token; Sluice logs in with its own.
[[target]]
name = "customers-db"
protocol = "postgres"
listen = "127.0.0.1:{pg_listen}"
upstream = "127.0.0.1:{up}"
credentials = {{ user = "postgres" }}
database = "demo"
access = ["agents", "sre"]
approvers = ["dba"]                # may approve held statements, never their own
guardrails = "db"
masking = "pii"
"#
        ));
    }
    if let Some(ssh) = ssh {
        c.push_str(&format!(
            r#"
# SSH: the password is the caller's token; Sluice logs in to the host with its own key.
[[target]]
name = "app-server"
protocol = "ssh"
listen = "127.0.0.1:{listen}"
upstream = "127.0.0.1:{up}"         # the demo's throw-away sshd
upstream_host_key = "{up_key}"   # pinned: never trusted on first use
credentials = {{ user = "{user}", key_file = "{key}" }}
host_key = "{host_key}"   # Sluice's own; the clients pin it ({known_hosts})
access = ["agents", "sre"]
approvers = ["leads"]
guardrails = "server"
"#,
            listen = ssh.listen,
            up = ssh.upstream,
            up_key = ssh.upstream_host_key,
            user = ssh.user,
            key = ssh.client_key.display(),
            host_key = ssh.host_key.display(),
            known_hosts = ssh.known_hosts.display(),
        ));
    }
    c.push_str(
        r#"
[guardrails.db]
rules = [
  { kinds = ["drop", "truncate"], action = "deny", message = "DROP and TRUNCATE are blocked on production" },
  { kinds = ["delete", "update"], unbounded = true, action = "deny", message = "add a WHERE clause" },
  { kinds = ["delete", "update"], action = "approve" },   # a second person approves
]

[guardrails.api]
rules = [
  { methods = ["DELETE"], path = "/v1/customers/*", action = "approve" },
]
"#,
    );
    if ssh.is_some() {
        c.push_str(
            r#"
[guardrails.server]
rules = [
  { commands = ["rm -rf *", "shutdown*", "reboot*", "mkfs*"], action = "deny", message = "destructive commands are blocked" },
  { commands = ["rm *", "systemctl restart *"], action = "approve" },   # a second person approves
]
shell = "allow"                    # a shell steps around command rules: "approve" in production
"#,
        );
    }
    c.push_str(
        r#"
[masking.pii]
detectors = ["email", "credit_card", "ssn", "phone", "iban", "aws_key", "jwt", "api_key"]
columns = { ssn = "redact", card_number = "last4" }
fields = { "$.customers[*].card_number" = "last4" }
"#,
    );
    c
}

fn walkthrough(
    exe: &Path,
    dir: &Path,
    pg: bool,
    pg_port: u16,
    http_port: u16,
    admin: u16,
    ssh: Option<&SshTarget>,
) {
    let exe = exe.display();
    let t = |who: &str| format!("$(cat {}/tokens/{who})", dir.display());
    let admin_url = format!("http://127.0.0.1:{admin}");
    println!(
        "Sluice demo: state in {}, config {}/demo.toml",
        dir.display(),
        dir.display()
    );
    println!(
        "People: agent-7 (agents: may query, not approve), dana (dba, leads: approves), sam (sre)."
    );
    println!("Copy these into another terminal (Ctrl-C here stops the demo):\n");
    let mut step = 0;
    let mut heading = |text: &str| {
        step += 1;
        println!("{step}. {text}");
    };
    if pg {
        let psql = |who: &str, sql: &str| {
            format!(
                "PGPASSWORD=\"{}\" psql \"host=127.0.0.1 port={pg_port} user=agent-7 dbname=demo\" -c \"{sql}\"",
                t(who)
            )
        };
        heading("Query customers through Sluice: emails, cards and SSNs come back masked");
        println!(
            "  $ {}",
            psql(
                "agent",
                "SELECT name, email, card_number, ssn FROM customers ORDER BY id LIMIT 3"
            )
        );
        println!();
        heading("DROP TABLE is blocked before it reaches PostgreSQL (add -v VERBOSITY=verbose to see SQLSTATE 42501)");
        println!("  $ {}", psql("agent", "DROP TABLE orders"));
        println!();
        heading("A DELETE waits for a second person (this one pauses until approved)");
        println!("  $ {}", psql("agent", "DELETE FROM orders WHERE id = 1"));
        println!("   ... and the approver, in another terminal, approves request 1:");
        println!(
            "  $ {exe} approvals list --admin {admin_url} --token \"{}\"",
            t("approver")
        );
        println!(
            "  $ {exe} approvals approve 1 --admin {admin_url} --token \"{}\"",
            t("approver")
        );
        println!(
            "   ... or in the web console, {admin_url}/ : sign in with the approver's token, or open the one-time link"
        );
        println!(
            "       {exe} console link --admin {admin_url} --token \"{}\"   prints (valid for a minute, used once)",
            t("approver")
        );
        println!();
    }
    let api = format!("http://127.0.0.1:{http_port}");
    heading(if pg {
        "The same through the HTTP API: masked JSON, and a DELETE held for approval (202)"
    } else {
        "The HTTP API through Sluice: masked JSON, and a DELETE held for approval (202)"
    });
    println!(
        "  $ curl -s -H \"Authorization: Bearer {}\" {api}/v1/customers",
        t("agent")
    );
    println!(
        "  $ curl -s -X DELETE -H \"Authorization: Bearer {}\" {api}/v1/customers/2",
        t("agent")
    );
    let id = if pg { 2 } else { 1 };
    println!(
        "   ... the approver approves request {id}, and the agent's same request now runs once:"
    );
    println!(
        "  $ {exe} approvals approve {id} --admin {admin_url} --token \"{}\"",
        t("approver")
    );
    println!(
        "  $ curl -s -X DELETE -H \"Authorization: Bearer {}\" {api}/v1/customers/2",
        t("agent")
    );
    println!("   (customer 2 is gone from the list now; a third DELETE needs a new approval)");
    println!();
    if let Some(ssh) = ssh {
        let sshpass = which("sshpass").is_some();
        // Password first: sshpass answers a password prompt, not Sluice's
        // keyboard-interactive "Access token:" (OpenSSH's first choice).
        let login = |cmd: &str| {
            format!(
                "{}ssh -p {} -o UserKnownHostsFile={} -o PreferredAuthentications=password agent-7@127.0.0.1{cmd}",
                if sshpass {
                    format!("SSHPASS=\"{}\" sshpass -e ", t("agent"))
                } else {
                    String::new()
                },
                ssh.listen,
                ssh.known_hosts.display()
            )
        };
        let files = ssh.files.display();
        heading(&format!(
            "SSH through Sluice: the token is the password; Sluice logs in to the host as {} with its own key",
            ssh.user
        ));
        println!("  $ {}", login(" uptime"));
        if !sshpass {
            println!(
                "   (paste the token from {}/tokens/agent at the password prompt, or get sshpass: sudo apt-get install sshpass)",
                dir.display()
            );
        }
        println!(
            "   ... rm -rf is blocked before it reaches the host (exit status 126; {files} stays):"
        );
        println!("  $ {}", login(&format!(" 'rm -rf {files}'")));
        let id = if pg { 3 } else { 2 };
        println!("   ... any other rm waits for a second person (this one pauses until approved):");
        println!("  $ {}", login(&format!(" 'rm {files}/old.log'")));
        println!("   ... and the approver approves request {id}:");
        println!(
            "  $ {exe} approvals approve {id} --admin {admin_url} --token \"{}\"",
            t("approver")
        );
        println!();
        let audit = dir.join("audit");
        let audit = audit.display();
        heading("Every SSH channel is recorded: log in for a shell (a command or two, then exit) and replay it");
        println!("  $ {}", login(""));
        println!("  $ {exe} sessions list --dir {audit}");
        println!(
            "  $ {exe} sessions play \"$(ls -t {audit}/sessions/*.cast | head -n 1)\" --dir {audit}"
        );
        println!("   (the newest recording; any id from the list plays too)");
        println!();
    }
    heading("Everything that happened is in the tamper-evident audit log");
    println!(
        "  $ {exe} audit search --dir {}/audit --user agent-7 --type command",
        dir.display()
    );
    println!(
        "  $ {exe} audit verify --dir {}/audit --allow-open-tail",
        dir.display()
    );
    println!();
}

/// The built-in HTTP JSON API (customers with PII) the HTTP target fronts. It
/// insists on its own key, so only requests through Sluice get data.
fn demo_api() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Which customers a DELETE removed (by position in CUSTOMERS).
    let deleted = std::sync::Arc::new(std::sync::Mutex::new(vec![false; CUSTOMERS.len()]));
    std::thread::Builder::new()
        .name("demo-api".into())
        .spawn(move || {
            for s in listener.incoming().flatten() {
                let deleted = deleted.clone();
                std::thread::spawn(move || api_connection(s, &deleted));
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(addr)
}

fn api_connection(mut s: TcpStream, deleted: &std::sync::Mutex<Vec<bool>>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = Vec::new();
    loop {
        let mut headers = [sluice_protocols::http::Header::EMPTY; 64];
        let parsed = sluice_protocols::http::parse_request(&buf, &mut headers, 64 * 1024);
        let (method, path, authorized, len, body_len) = match parsed {
            Ok(sluice_protocols::Status::Complete(r, n)) => {
                let body_len = r
                    .header("content-length")
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok())
                    .unwrap_or(0);
                let ok = r.header("authorization") == Some(format!("Bearer {API_KEY}").as_bytes());
                (r.method.to_owned(), r.path().to_owned(), ok, n, body_len)
            }
            Ok(sluice_protocols::Status::Partial) => {
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            }
            Err(_) => return,
        };
        while buf.len() < len + body_len {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..len + body_len);
        let (status, body) = if !authorized {
            (
                "401 Unauthorized",
                r#"{"error":"missing or wrong API key"}"#.to_owned(),
            )
        } else {
            match (method.as_str(), path.as_str()) {
                ("GET", "/v1/customers") => {
                    let gone = deleted.lock().map(|d| d.clone()).unwrap_or_default();
                    ("200 OK", customers_json(&gone))
                }
                ("DELETE", p) if p.starts_with("/v1/customers/") => {
                    let id = p["/v1/customers/".len()..].parse::<usize>().ok();
                    let mut gone = deleted.lock().unwrap_or_else(|e| e.into_inner());
                    match id.filter(|&i| i >= 1 && i <= CUSTOMERS.len() && !gone[i - 1]) {
                        Some(i) => {
                            gone[i - 1] = true;
                            ("200 OK", format!(r#"{{"deleted":{i}}}"#))
                        }
                        None => (
                            "404 Not Found",
                            r#"{"error":"no such customer"}"#.to_owned(),
                        ),
                    }
                }
                _ => (
                    "404 Not Found",
                    r#"{"error":"no such resource"}"#.to_owned(),
                ),
            }
        };
        let out = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// Fake people: names, emails, phones, SSNs (valid shape, not real), test cards.
const CUSTOMERS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "Jane Roe",
        "jane.roe@example.com",
        "+1 415 555 0134",
        "536-22-8741",
        "4111 1111 1111 1111",
    ),
    (
        "John Doe",
        "john.doe@example.org",
        "+1 212 555 0187",
        "421-37-9052",
        "5500 0000 0000 0004",
    ),
    (
        "Ada Park",
        "ada.park@example.net",
        "+44 20 7946 0958",
        "318-64-2270",
        "3400 000000 00009",
    ),
    (
        "Omar Haddad",
        "omar.h@example.com",
        "+1 646 555 0112",
        "602-18-4439",
        "6011 0000 0000 0004",
    ),
    (
        "Li Wei",
        "li.wei@example.com",
        "+1 312 555 0199",
        "245-71-6603",
        "4012 8888 8888 1881",
    ),
];

/// The customers a DELETE has not removed (`gone` by position).
fn customers_json(gone: &[bool]) -> String {
    let list: Vec<serde_json::Value> = CUSTOMERS
        .iter()
        .enumerate()
        .filter(|(i, _)| !gone.get(*i).copied().unwrap_or(false))
        .map(|(i, (name, email, phone, _, card))| {
            serde_json::json!({ "id": i + 1, "name": name, "email": email, "phone": phone, "card_number": card })
        })
        .collect();
    serde_json::json!({ "customers": list }).to_string()
}

fn seed_sql() -> String {
    let mut sql = String::from(
        "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, phone text, ssn text, card_number text);\n\
         CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, amount numeric(10,2), status text);\n",
    );
    for (i, (name, email, phone, ssn, card)) in CUSTOMERS.iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO customers VALUES ({}, '{name}', '{email}', '{phone}', '{ssn}', '{card}');\n",
            i + 1
        ));
    }
    for i in 1..=10 {
        sql.push_str(&format!(
            "INSERT INTO orders VALUES ({i}, {}, {}.50, 'paid');\n",
            (i - 1) % CUSTOMERS.len() + 1,
            10 * i
        ));
    }
    sql
}

/// A throw-away PostgreSQL cluster in a fresh directory under the system's
/// temporary directory: the server runs as its own user (`postgres` when the
/// demo runs as root), which may not be able to enter the state directory (a
/// home directory is often 0700). Removed when the demo stops.
struct Postgres {
    dir: PathBuf,
    data: PathBuf,
    pg_ctl: PathBuf,
    port: u16,
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Postgres {
    fn start() -> Result<Postgres, String> {
        let (Some(initdb), Some(pg_ctl)) = (pg_bin("initdb"), pg_bin("pg_ctl")) else {
            return Err("the PostgreSQL server binaries are not installed (on Debian/Ubuntu: sudo apt-get install postgresql)".into());
        };
        if which("psql").is_none() {
            return Err(
                "psql is not installed (on Debian/Ubuntu: sudo apt-get install postgresql-client)"
                    .into(),
            );
        }
        let dir = std::env::temp_dir().join(format!("sluice-demo-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let dir = dir.as_path();
        if is_root() {
            if run_ok(Command::new("id").arg("postgres"), "id postgres").is_err() {
                run_ok(
                    Command::new("useradd").args(["--system", "--no-create-home", "postgres"]),
                    "useradd postgres",
                )?;
            }
            run_ok(
                Command::new("chown").arg("-R").arg("postgres:").arg(dir),
                "chown",
            )?;
        }
        let data = dir.join("data");
        run_ok(
            as_user("postgres", &initdb).arg("-D").arg(&data).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]),
            "initdb",
        )?;
        let port = free_port()?;
        run_ok(
            as_user("postgres", &pg_ctl)
                .arg("-D")
                .arg(&data)
                .arg("-o")
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
                    dir.display()
                ))
                .arg("-l")
                .arg(dir.join("server.log"))
                .args(["-w", "-t", "60", "start"]),
            "pg_ctl start",
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let _ = std::fs::remove_dir_all(dir);
            format!("{e}\nthe server's log ends with:\n  {}", tail.join("\n  "))
        })?;
        let pg = Postgres {
            dir: dir.to_owned(),
            data,
            pg_ctl,
            port,
        };
        println!(
            "A throw-away PostgreSQL runs on 127.0.0.1:{port} (data in {}, removed on Ctrl-C)",
            dir.display()
        );
        let psql = |db: &str, sql: &str| {
            run_ok(
                Command::new("psql")
                    .args([
                        "-X",
                        "-q",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-h",
                        "127.0.0.1",
                        "-U",
                        "postgres",
                    ])
                    .arg("-p")
                    .arg(port.to_string())
                    .args(["-d", db, "-c", sql]),
                "seeding the demo database",
            )
        };
        if let Err(e) =
            psql("postgres", "CREATE DATABASE demo").and_then(|()| psql("demo", &seed_sql()))
        {
            pg.stop();
            return Err(e);
        }
        Ok(pg)
    }

    fn stop(&self) {
        let _ = as_user("postgres", &self.pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ssh-keygen`: a new ed25519 key pair without a passphrase at `path` (and `path.pub`).
fn ssh_keygen(path: &Path) -> Result<(), String> {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "sluice-demo", "-f"])
            .arg(path),
        "ssh-keygen",
    )
}

/// The public half of a key made by [`ssh_keygen`], as `TYPE BASE64`.
fn public_key(path: &Path) -> Result<String, String> {
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    let line =
        std::fs::read_to_string(&pub_path).map_err(|e| format!("{}: {e}", pub_path.display()))?;
    let fields: Vec<&str> = line.split_whitespace().take(2).collect();
    match fields[..] {
        [kind, key] => Ok(format!("{kind} {key}")),
        _ => Err(format!("{}: not a public key", pub_path.display())),
    }
}

/// A throw-away OpenSSH server on a free loopback port, run as the current
/// user from the state directory's `sshd/`: its own host key, and the key
/// Sluice logs in with as its only authorized key. Stopped when dropped.
struct Sshd {
    child: Child,
    dir: PathBuf,
    port: u16,
    /// Who it logs in (the user running the demo).
    user: String,
}

impl Sshd {
    fn start(state: &Path) -> Result<Sshd, String> {
        let Some(sshd) = which("sshd") else {
            return Err(
                "sshd is not installed (on Debian/Ubuntu: sudo apt-get install openssh-server)"
                    .into(),
            );
        };
        for client in ["ssh", "ssh-keygen"] {
            if which(client).is_none() {
                return Err(format!(
                    "{client} is not installed (on Debian/Ubuntu: sudo apt-get install openssh-client)"
                ));
            }
        }
        // sshd re-executes itself, by an absolute path only.
        let sshd = sshd.canonicalize().unwrap_or(sshd);
        let user = Command::new("id")
            .arg("-un")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .ok_or("`id -un` did not name the current user")?;
        let dir = state.join("sshd");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        ssh_keygen(&dir.join("host_key"))?;
        ssh_keygen(&dir.join("client_key"))?;
        if is_root() {
            // sshd started as root wants its privilege separation directory.
            std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
        }
        let port = free_port()?;
        let config = format!(
            "# The demo's throw-away sshd (written by `sluice demo`): it logs in {user}\n\
             # with the key Sluice holds, and nobody else.\n\
             ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\nPidFile none\n\
             AuthorizedKeysFile {d}/client_key.pub\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n\
             AllowUsers {user}\nAllowTcpForwarding no\nX11Forwarding no\n",
            d = dir.display()
        );
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log_path = dir.join("sshd.log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&sshd);
        cmd.args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Ctrl-C goes to the demo alone, which drains its sessions first.
            .process_group(0);
        // It also ends when the demo ends without dropping it (a second
        // Ctrl-C exits at once).
        // SAFETY: the closure only makes one system call, which is
        // async-signal-safe, and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("{}: {e}", sshd.display()))?;
        let mut sshd = Sshd {
            child,
            dir,
            port,
            user,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            let exited = matches!(sshd.child.try_wait(), Ok(Some(_)));
            if exited || std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "sshd did not start; its log ends with:\n  {}",
                    tail.join("\n  ")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "A throw-away sshd runs on 127.0.0.1:{port} and logs in {} (files in {}, stopped on Ctrl-C)",
            sshd.user,
            sshd.dir.display()
        );
        Ok(sshd)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the SSH target's config and walkthrough need: Sluice's own host key
/// (made here, so clients can pin it in the demo's `known_hosts`) and a few
/// files on the "host" for the walkthrough's commands to act on.
struct SshTarget {
    listen: u16,
    upstream: u16,
    upstream_host_key: String,
    user: String,
    client_key: PathBuf,
    host_key: PathBuf,
    known_hosts: PathBuf,
    files: PathBuf,
}

impl SshTarget {
    fn new(state: &Path, sshd: &Sshd, listen: u16) -> Result<SshTarget, String> {
        let host_key = state.join("keys").join("app-server.ssh_host_ed25519_key");
        ssh_keygen(&host_key)?;
        let known_hosts = state.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{listen} {}\n", public_key(&host_key)?),
        )
        .map_err(|e| format!("{}: {e}", known_hosts.display()))?;
        let files = state.join("host");
        std::fs::create_dir_all(&files).map_err(|e| format!("{}: {e}", files.display()))?;
        for (name, text) in [
            (
                "notes.txt",
                "Files on the demo host: rm -rf never reaches them.\n",
            ),
            (
                "old.log",
                "An old log: removing it takes a second person.\n",
            ),
        ] {
            std::fs::write(files.join(name), text).map_err(|e| e.to_string())?;
        }
        Ok(SshTarget {
            listen,
            upstream: sshd.port,
            upstream_host_key: public_key(&sshd.dir.join("host_key"))?,
            user: sshd.user.clone(),
            client_key: sshd.dir.join("client_key"),
            host_key,
            known_hosts,
            files,
        })
    }
}
