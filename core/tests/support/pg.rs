//! Postgres-gateway helpers: dev keys, tokens, configs and clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use sluice::identity::token::DevKey;

pub const ISSUER: &str = "https://idp.sluice.test/";

/// A dev key pair written to `dir` (private key + JWKS), for configs and tokens.
pub struct Keys {
    pub key: DevKey,
    pub jwks_path: PathBuf,
}

impl Keys {
    pub fn new(dir: &Path) -> Keys {
        let key = DevKey::generate();
        let jwks_path = dir.join("jwks.json");
        std::fs::write(&jwks_path, key.jwks().to_string()).unwrap();
        Keys { key, jwks_path }
    }

    /// A valid 10-minute token for `sub` in `groups`.
    pub fn token(&self, sub: &str, groups: &[&str]) -> String {
        let now = sluice::identity::unix_now();
        self.key.sign(&json!({
            "iss": ISSUER, "aud": "sluice", "sub": sub, "groups": groups,
            "iat": now, "nbf": now, "exp": now + 600,
        }))
    }

    /// The `[identity]` table (keys may be appended: it ends without a blank line).
    pub fn identity_block(&self) -> String {
        format!(
            "[identity]\nissuer = \"{ISSUER}\"\naudience = \"sluice\"\njwks = \"file:{}\"\n",
            self.jwks_path.display()
        )
    }
}

/// A postgres target block; `extra` lines are appended inside the table.
pub fn pg_target(name: &str, listen: SocketAddr, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[[target]]\nname = \"{name}\"\nprotocol = \"postgres\"\nlisten = \"{listen}\"\nupstream = \"{upstream}\"\ncredentials = {{ user = \"postgres\" }}\naccess = [\"sre\", \"agents\"]\n{extra}\n"
    )
}

/// A blocking driver connection through the gateway with `token` as password.
pub fn connect(
    addr: SocketAddr,
    token: &str,
    db: &str,
) -> Result<postgres::Client, postgres::Error> {
    postgres::Config::new()
        .host(&addr.ip().to_string())
        .port(addr.port())
        .user("informational-only")
        .password(token)
        .dbname(db)
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect(postgres::NoTls)
}

/// The SQLSTATE of a driver error (`""` if it carries none).
pub fn sqlstate(e: &postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

/// Runs `psql` through the gateway with the token as password.
pub fn psql_with(addr: SocketAddr, token: &str, args: &[&str]) -> Output {
    psql_with_env(addr, token, &[], args)
}

/// [`psql_with`] with extra environment (e.g. `PGOPTIONS`, `PGCLIENTENCODING`).
pub fn psql_with_env(addr: SocketAddr, token: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", "someone", "-d", "postgres"])
        .args(args)
        .env("PGPASSWORD", token)
        .env("PGCONNECT_TIMEOUT", "10")
        .envs(env.iter().copied())
        .output()
        .expect("run psql")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The error of a connection attempt that must fail.
pub fn refused(addr: SocketAddr, token: &str, db: &str) -> postgres::Error {
    match connect(addr, token, db) {
        Ok(_) => panic!("connection with this token was accepted"),
        Err(e) => e,
    }
}

/// The server's message of a driver error (or its display form).
pub fn message(e: &postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

/// A hand-driven protocol connection, for what drivers do not expose (named
/// statements refused at Parse, pipelines without Sync).
pub struct RawPg {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl RawPg {
    /// Connects and logs in with `token`; panics unless the login succeeds.
    pub fn login(addr: SocketAddr, token: &str) -> RawPg {
        let (msgs, c) = RawPg::start(addr, token, &[]);
        assert!(
            msgs.iter().all(|(t, _)| *t != b'E'),
            "login failed: {msgs:?}"
        );
        c
    }

    /// Connects with these startup parameters (beside `user` and
    /// `database`) and answers the password request with `token`; returns
    /// the messages up to the first `ReadyForQuery` or `ErrorResponse`.
    pub fn start(
        addr: SocketAddr,
        token: &str,
        params: &[(&str, &str)],
    ) -> (Vec<(u8, Vec<u8>)>, RawPg) {
        use sluice_protocols::postgres::encode;
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut c = RawPg {
            stream,
            buf: Vec::new(),
        };
        let mut out = Vec::new();
        let mut all = vec![("user", "raw"), ("database", "postgres")];
        all.retain(|(k, _)| !params.iter().any(|(p, _)| p == k));
        all.extend_from_slice(params);
        encode::startup_message(&mut out, &all);
        c.send(&out);
        let mut msgs = c.read_until_any(b"RE");
        if msgs.last().is_some_and(|(t, _)| *t == b'R') {
            let mut out = Vec::new();
            encode::password(&mut out, token.as_bytes());
            c.send(&out);
            msgs.extend(c.read_until_any(b"ZE"));
        }
        (msgs, c)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends `bytes` and reads until `readies` `ReadyForQuery` messages have
    /// come; `None` once the connection is gone (a gateway killed mid-test).
    pub fn try_exchange(&mut self, bytes: &[u8], readies: usize) -> Option<Vec<(u8, Vec<u8>)>> {
        use sluice_protocols::postgres::{frame, Framed};
        use std::io::{Read, Write};
        self.stream.write_all(bytes).ok()?;
        let mut out = Vec::new();
        let mut seen = 0;
        loop {
            while let Ok(Framed::Complete(f)) = frame(&self.buf, 1 << 30) {
                let body = self.buf[5..f.len].to_vec();
                self.buf.drain(..f.len);
                seen += usize::from(f.tag == b'Z');
                out.push((f.tag, body));
                if seen == readies {
                    return Some(out);
                }
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Reads messages until one with tag `stop` (included).
    pub fn read_until(&mut self, stop: u8) -> Vec<(u8, Vec<u8>)> {
        self.read_until_any(&[stop])
    }

    /// Reads messages until one with any of the tags `stops` (included).
    pub fn read_until_any(&mut self, stops: &[u8]) -> Vec<(u8, Vec<u8>)> {
        use std::io::Read;
        let mut out = Vec::new();
        loop {
            use sluice_protocols::postgres::{frame, Framed};
            while let Ok(Framed::Complete(f)) = frame(&self.buf, 1 << 30) {
                let body = self.buf[5..f.len].to_vec();
                self.buf.drain(..f.len);
                out.push((f.tag, body));
                if stops.contains(&f.tag) {
                    return out;
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).expect("read from gateway");
            assert!(n > 0, "connection closed; got {out:?}");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The SQLSTATE and message of an `ErrorResponse` body.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let mut code = String::new();
    let mut msg = String::new();
    for field in body.split(|&b| b == 0) {
        match field.first() {
            Some(b'C') => code = String::from_utf8_lossy(&field[1..]).into_owned(),
            Some(b'M') => msg = String::from_utf8_lossy(&field[1..]).into_owned(),
            _ => {}
        }
    }
    (code, msg)
}
