//! Test harness: the real `sluice` binary, real servers, loopback only.
//!
//! - [`Sluice`] writes a config into a temp dir, starts `sluice serve` on it, waits
//!   for its `event=ready` line and kills it on drop.
//! - [`PgCluster`] is a throw-away PostgreSQL (`initdb` + `pg_ctl`) on a free port;
//!   [`MariaDb`] likewise. Both run as an unprivileged user when the tests run as root.
//! - Small upstream servers ([`echo_server`], ...) for the L4 tests.
//!
//! Every wait here is a bounded loop, so a broken gateway fails a test instead of
//! hanging it.
#![allow(dead_code)]

use sluice::localserver::{as_user, is_root};
pub use sluice::localserver::{pg_bin, which};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub mod pg;
pub mod servers;
#[allow(unused_imports)]
pub use servers::*;

/// A loopback port nobody listens on right now, and not handed out before by
/// this test process (the kernel may give the same free port to two calls in
/// a row, and one config would then use it twice).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no fresh loopback port in 100 tries");
}

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

pub fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A running `sluice serve`.
pub struct Sluice {
    child: Child,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    logs: Arc<Mutex<String>>,
}

impl Sluice {
    pub fn start(config: &str) -> Sluice {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Sluice {
        Self::try_start(config, env).unwrap_or_else(|logs| panic!("sluice did not start:\n{logs}"))
    }

    /// Starts sluice; `Err(logs)` if it exits or is not ready within 30 s.
    pub fn try_start(config: &str, env: &[(&str, &str)]) -> Result<Sluice, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("sluice.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut cmd = Command::new(sluice_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("SLUICE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn sluice");
        let logs = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let mut s = Sluice {
            child,
            dir,
            config_path,
            logs,
        };
        let ready = wait_for(Duration::from_secs(30), || {
            if s.logs().contains("event=ready") {
                return Some(true);
            }
            match s.child.try_wait() {
                Ok(Some(_)) => Some(false),
                _ => None,
            }
        });
        if ready == Some(true) {
            Ok(s)
        } else {
            // Let the reader thread catch the last lines.
            thread::sleep(Duration::from_millis(100));
            Err(s.logs())
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until the logs contain `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_for(timeout, || self.logs().contains(needle).then_some(())).is_some()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill({sig})");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = &mut self.child;
        wait_for(timeout, || child.try_wait().ok().flatten())
    }

    /// Replaces the config file (for reload tests).
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(&self.config_path, config).expect("rewrite config");
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- sluice logs ---\n{}", self.logs());
        }
    }
}

/// A minimal HTTP/1.1 GET: `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path)
}

pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let (status, out) = http_exchange(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    );
    (status, response_body(&out).to_owned())
}

/// Sends one raw HTTP/1.1 request, written out whole (head and body; it
/// should ask for `Connection: close`), and reads the response to its end:
/// `(status, the whole response)`. Panics when that fails.
pub fn http_exchange(addr: SocketAddr, request: &str) -> (u16, String) {
    try_http_exchange(addr, request).unwrap_or_else(|e| panic!("{e}"))
}

/// [`http_exchange`], saying what failed instead of panicking.
pub fn try_http_exchange(addr: SocketAddr, request: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response: {out:?}"))?;
    Ok((status, out))
}

/// An admin API request with a bearer token and a JSON body.
pub fn api_request(method: &str, path: &str, token: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The body of a whole HTTP response (empty when there is none).
pub fn response_body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The value of one Prometheus sample, e.g. `sluice_connections_total{target="t",shard="0"}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A temp dir the unprivileged server user can own.
fn server_dir(user: &str, prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    if is_root() {
        let status = Command::new("chown")
            .arg(format!("{user}:"))
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(status.success(), "chown {user} {:?}", dir.path());
    }
    dir
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throw-away PostgreSQL cluster on a free loopback port, trust auth, user `postgres`.
pub struct PgCluster {
    dir: tempfile::TempDir,
    pub port: u16,
    /// The server options it was started with (for [`PgCluster::restart`]).
    opts: String,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        Self::start_with(&[], "")
    }

    /// A cluster serving TLS with this certificate and key (PEM).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> PgCluster {
        Self::start_with(
            &[("server.crt", cert_pem), ("server.key", key_pem)],
            "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key",
        )
    }

    /// Starts a cluster with extra files in its data directory and extra options.
    pub fn start_with(files: &[(&str, &str)], options: &str) -> PgCluster {
        let initdb = pg_bin("initdb").expect("PostgreSQL server binaries (initdb) are not installed: run ./test.sh as root to install them");
        let pg_ctl = pg_bin("pg_ctl").expect("pg_ctl");
        let dir = server_dir("postgres", "sluice-pg-");
        let data = dir.path().join("data");
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
        );
        for (name, content) in files {
            let path = data.join(name);
            std::fs::write(&path, content).expect("write cluster file");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if is_root() {
                run_ok(
                    Command::new("chown").arg("postgres:").arg(&path),
                    "chown cluster file",
                );
            }
        }
        let port = free_port();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=300 -c shared_buffers=32MB {options}",
            dir.path().display()
        );
        run_ok(
            as_user("postgres", &pg_ctl)
                .arg("-D")
                .arg(&data)
                .arg("-o")
                .arg(&opts)
                .arg("-l")
                .arg(dir.path().join("log"))
                .args(["-w", "-t", "60", "start"]),
            "pg_ctl start",
        );
        PgCluster { dir, port, opts }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Puts `lines` at the top of pg_hba.conf and reloads the server.
    pub fn prepend_hba(&self, lines: &str) {
        let path = self.dir.path().join("data").join("pg_hba.conf");
        let old = std::fs::read_to_string(&path).expect("read pg_hba.conf");
        std::fs::write(&path, format!("{lines}\n{old}")).expect("write pg_hba.conf");
        let pg_ctl = pg_bin("pg_ctl").expect("pg_ctl");
        run_ok(
            as_user("postgres", &pg_ctl)
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("reload"),
            "pg_ctl reload",
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    /// The server's log so far (start it with `-c log_statement=all` to see
    /// every statement that reached it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Runs `psql -c SQL` directly against the cluster; returns stdout.
    pub fn psql(&self, sql: &str) -> String {
        psql(self.addr(), "postgres", sql).expect("psql against the cluster")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(pg_ctl) = pg_bin("pg_ctl") {
            let _ = as_user("postgres", &pg_ctl)
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// Runs `psql` (unaligned, tuples only) against `addr`; `Err(stderr)` on failure.
pub fn psql(addr: SocketAddr, db: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg("-h")
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", "postgres", "-d", db, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A throw-away MariaDB server on a free loopback port; `root` with no password.
pub struct MariaDb {
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        let install = which("mariadb-install-db")
            .expect("mariadb-install-db is not installed: run ./test.sh as root to install it");
        let server = Path::new("/usr/sbin/mariadbd");
        assert!(server.exists(), "/usr/sbin/mariadbd is not installed");
        let dir = server_dir("mysql", "sluice-maria-");
        let data = dir.path().join("data");
        let mut cmd = Command::new(&install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if is_root() {
            cmd.arg("--user=mysql");
        }
        run_ok(&mut cmd, "mariadb-install-db");
        let port = free_port();
        let mut cmd = Command::new(server);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if is_root() {
            cmd.arg("--user=mysql");
        }
        let child = cmd.spawn().expect("start mariadbd");
        let m = MariaDb { dir, child, port };
        let up = wait_for(Duration::from_secs(60), || m.query("SELECT 1").ok());
        assert!(up.is_some(), "mariadbd did not come up on port {port}");
        m
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn query(&self, sql: &str) -> Result<String, String> {
        mariadb_query(self.addr(), sql)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one statement with the `mariadb` client over TCP; returns stdout.
pub fn mariadb_query(addr: SocketAddr, sql: &str) -> Result<String, String> {
    let client = which("mariadb")
        .or_else(|| which("mysql"))
        .ok_or("mariadb client not installed")?;
    let out = Command::new(client)
        .args([
            "--no-defaults",
            "--protocol=TCP",
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "-N",
            "-B",
        ])
        .arg(format!("-P{}", addr.port()))
        .args(["--connect-timeout=10", "-e", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A tcp target config block.
pub fn tcp_target(name: &str, listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "[[target]]\nname = \"{name}\"\nprotocol = \"tcp\"\nlisten = \"{listen}\"\nupstream = \"{upstream}\"\naccess = [\"*\"]\n"
    )
}

impl PgCluster {
    /// Stops the server (`pg_ctl stop -m fast`: open sessions are ended), keeping
    /// its data directory for [`PgCluster::restart`].
    pub fn stop(&self) {
        let pg_ctl = pg_bin("pg_ctl").expect("pg_ctl");
        run_ok(
            as_user("postgres", &pg_ctl)
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
            "pg_ctl stop",
        );
    }

    /// Starts a server [`PgCluster::stop`]ped before, on the same port with the
    /// same options (its log goes on in the same file).
    pub fn restart(&self) {
        let pg_ctl = pg_bin("pg_ctl").expect("pg_ctl");
        run_ok(
            as_user("postgres", &pg_ctl)
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("-o")
                .arg(&self.opts)
                .arg("-l")
                .arg(self.dir.path().join("log"))
                .args(["-w", "-t", "60", "start"]),
            "pg_ctl start (again)",
        );
    }
}
