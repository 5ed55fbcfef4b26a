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

    pub fn identity_block(&self) -> String {
        format!(
            "[identity]\nissuer = \"{ISSUER}\"\naudience = \"sluice\"\njwks = \"file:{}\"\n\n",
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
    Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", "someone", "-d", "postgres"])
        .args(args)
        .env("PGPASSWORD", token)
        .env("PGCONNECT_TIMEOUT", "10")
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
