//! Sluice configuration: the TOML contract, validated as a whole.
//!
//! Operators write one TOML file (see `config/examples/` and `config/README.md`).
//! [`parse`] deserialises it into the span-keeping [`schema`] types, then
//! [`validate`](crate::validate) checks it as a whole and reports *every* problem it
//! finds, each as `file:line:col: message`, instead of stopping at the first. The
//! result is a plain [`Config`] with parsed addresses and durations and resolved
//! secrets, which the gateway then turns into per-shard state.
//!
//! The crate does no I/O: the caller passes the file's text and a function to look up
//! environment variables, so validation is a pure function and easy to test.
//!
//! ```
//! let src = r#"
//! [[target]]
//! name = "cache"
//! protocol = "tcp"
//! listen = "127.0.0.1:16379"
//! upstream = "127.0.0.1:6379"
//! access = ["*"]
//! "#;
//! let config = sluice_config::parse(src, "sluice.toml", |_| None).unwrap();
//! assert_eq!(config.targets[0].name, "cache");
//! ```
//!
//! # Layout
//! - [`schema`]: the file's shape, one struct per table, spans kept.
//! - `validate`: whole-file checks producing [`Config`] or [`ConfigError`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub mod policy;
pub mod schema;
mod validate;

pub use schema::{Action, ApprovalMode, Durability, IoDriver, Protocol, UpstreamTls};

/// Statement kinds a guardrail rule may name (`opaque` is a flag that rules may
/// name like a kind).
pub const STATEMENT_KINDS: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "merge",
    "copy",
    "program",
    "create",
    "alter",
    "drop",
    "truncate",
    "grant",
    "revoke",
    "set",
    "set_role",
    "set_search_path",
    "show",
    "begin",
    "commit",
    "rollback",
    "prepare",
    "execute",
    "deallocate",
    "do",
    "call",
    "explain",
    "vacuum",
    "lock",
    "listen",
    "notify",
    "other",
    "opaque",
];

/// Content detectors a masking profile may enable.
pub const DETECTORS: &[&str] = &[
    "email",
    "credit_card",
    "ssn",
    "phone",
    "iban",
    "ipv4",
    "ipv6",
    "aws_key",
    "jwt",
    "private_key",
    "bearer",
    "api_key",
];

/// Mask styles a column rule may use.
pub const MASK_STYLES: &[&str] = &["redact", "last4", "full", "hash"];

/// Token algorithms `[identity] algorithms` may list.
pub const JWT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

/// The default allow-list: asymmetric algorithms only.
pub const DEFAULT_JWT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// HTTP methods an HTTP guardrail rule may name.
pub const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "*",
];

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: Gateway,
    pub identity: Option<Identity>,
    pub audit: Option<Audit>,
    pub tls: Option<Tls>,
    pub targets: Vec<Target>,
    pub guardrails: BTreeMap<String, Guardrails>,
    pub masking: BTreeMap<String, MaskingProfile>,
    pub approvals: Approvals,
    /// `None`: approvals live in this process only (a single instance).
    pub state: Option<State>,
    /// `None`: the console signs in with pasted tokens and one-time links only.
    pub console: Option<Console>,
}

/// `[console]`: sign-in to the web console with the identity provider
/// (authorization code flow with PKCE against `identity.issuer`).
#[derive(Debug, Clone)]
pub struct Console {
    pub client_id: String,
    /// Resolved from `client_secret_env` (a confidential client); PKCE either way.
    pub client_secret: Option<Secret>,
    /// The console's address as browsers reach it (the redirect URI is
    /// `{url}/console/oidc/callback`).
    pub url: String,
    pub scopes: String,
}

/// `[state]`: the PostgreSQL database several instances share approvals,
/// grants and audit anchors through.
#[derive(Debug, Clone)]
pub struct State {
    /// libpq-style `key=value` pairs (host, port, dbname, user, ...), no password.
    pub postgres: String,
    /// Resolved from `password_env`.
    pub password: Option<Secret>,
    pub tls: UpstreamTls,
    /// PEM CA certificates for `tls = "verify"`.
    pub ca: Option<String>,
    /// This instance's name in requests, logs and anchors.
    pub instance: String,
    /// An instance silent this long is dead: its pending requests are abandoned.
    pub lease: Duration,
}

/// The connection keys `[state] postgres` may name.
pub const STATE_CONNINFO_KEYS: &[&str] = &[
    "host",
    "port",
    "dbname",
    "user",
    "application_name",
    "connect_timeout",
    "options",
];

/// `[approvals]`: how requests for a second person's approval behave.
#[derive(Debug, Clone)]
pub struct Approvals {
    /// How long a request stays open (and a waiting session waits).
    pub timeout: Duration,
    /// How long an approved request stays usable by its requester's re-run.
    pub grant_ttl: Duration,
    /// The default for targets that do not set `approval_mode`.
    pub mode: ApprovalMode,
    /// Webhook URLs (`http://host:port/path`) told of every request and decision.
    pub notify: Vec<String>,
    /// Most requests open at once; more are refused (a flood cannot exhaust memory).
    pub max_pending: usize,
}

impl Default for Approvals {
    fn default() -> Self {
        Approvals {
            timeout: Duration::from_secs(300),
            grant_ttl: Duration::from_secs(600),
            mode: ApprovalMode::Wait,
            notify: Vec::new(),
            max_pending: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Gateway {
    /// Number of shards; `0` means one per available core.
    pub shards: usize,
    pub admin: Option<SocketAddr>,
    /// The admin listener speaks TLS (with `[tls]`'s certificate).
    pub admin_tls: bool,
    /// How long open sessions may run after a stop signal before the process exits.
    pub drain_timeout: Duration,
    /// How long to wait for an upstream connection.
    pub connect_timeout: Duration,
    /// How long a client may take to send a whole request head (HTTP), from
    /// its first byte.
    pub head_timeout: Duration,
    pub pin_cores: bool,
    pub io: IoDriver,
    /// Per-direction copy buffer of a pass-through connection, in bytes.
    pub buffer_size: usize,
    /// Largest protocol message accepted from a client or upstream, in bytes.
    pub max_message: usize,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub audience: String,
    /// `file:PATH` or a URL; `None` means OIDC discovery from the issuer.
    pub jwks: Option<String>,
    pub jwks_refresh: Duration,
    pub groups_claim: String,
    pub leeway: Duration,
    /// Accepted `alg` values (validated names, e.g. `RS256`, `EdDSA`).
    pub algorithms: Vec<String>,
    pub hmac_secret: Option<Secret>,
    pub require_typ: Option<String>,
    pub admin_groups: Vec<String>,
    /// SSH: OpenSSH public key lines of the CAs whose user certificates may
    /// log in instead of a token (principals: the subject and `group:NAME`s).
    pub ssh_user_ca: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Audit {
    pub dir: String,
    pub durability: Durability,
    pub flush_interval: Duration,
    pub signing_key: Option<String>,
    /// Rotate the current segment at this size ...
    pub segment_bytes: u64,
    /// ... or this age.
    pub segment_age: Duration,
    /// Remove segments older than this (never the current one).
    pub retention_age: Option<Duration>,
    /// Remove the oldest segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Sign a checkpoint every this many records ...
    pub checkpoint_every: u64,
    /// ... or this often, whichever comes first.
    pub checkpoint_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub protocol: Protocol,
    pub listen: SocketAddr,
    /// `host:port` of the system the target fronts.
    pub upstream: String,
    pub credentials: Option<Credentials>,
    /// Groups that may connect; `*` means any caller (the only choice for `tcp`).
    pub access: Vec<String>,
    pub approvers: Vec<String>,
    /// Distinct approvers a request needs (rules may override).
    pub quorum: u8,
    pub approval_mode: ApprovalMode,
    /// Overrides `approvals.timeout` for this target.
    pub approval_timeout: Option<Duration>,
    pub guardrails: Option<String>,
    pub masking: Option<String>,
    pub database: Option<String>,
    /// Refuse clients that do not use TLS (never downgrade).
    pub require_tls: bool,
    /// HTTP: an `X-HTTP-Method-Override` header (or kin) or `_method` in the
    /// query is judged as the method it names (together with the request's
    /// own: the stricter decision holds) instead of being refused.
    pub method_override: bool,
    pub upstream_tls: UpstreamTls,
    pub upstream_ca: Option<String>,
    /// SSH: the upstream's pinned host key, an OpenSSH public key line ...
    pub upstream_host_key: Option<String>,
    /// ... or an OpenSSH known_hosts file with the upstream's keys.
    pub upstream_known_hosts: Option<String>,
    /// SSH: Sluice's own host key file.
    pub host_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: Option<String>,
    /// Resolved from `password_env` when the configuration was loaded.
    pub password: Option<Secret>,
    pub header: Option<String>,
    /// HTTP: the query parameter carrying the credential.
    pub param: Option<String>,
    /// Resolved from `value_env`.
    pub value: Option<Secret>,
    /// SSH: the private key file Sluice logs in to the upstream with.
    pub key_file: Option<String>,
}

/// A credential value that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct Guardrails {
    pub rules: Vec<Rule>,
    /// User-defined functions (PostgreSQL) allowed to be called as if built
    /// in: lower-cased names, `name` or `schema.name`. A call of any other
    /// function defined in the database (not built in, not from an extension)
    /// counts as `opaque`: its body runs out of the gateway's sight.
    pub functions: Vec<String>,
    /// SSH sessions: what besides `exec` commands may happen.
    pub ssh: SshRules,
}

/// What an SSH session may do besides running `exec` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshRules {
    /// Interactive shells: default `allow`, or `deny` when a rule of the set
    /// denies or holds a command (a shell would step around it).
    pub shell: Action,
    /// The sftp subsystem (and so modern `scp`): default `deny`.
    pub sftp: Action,
    /// `-L`/`-R`/`-D` forwarding: default `deny`.
    pub port_forwarding: Action,
    /// `-A`: default `deny`.
    pub agent_forwarding: Action,
    /// `-X`/`-Y`: default `deny`.
    pub x11: Action,
    /// A command that no rule names: `allow` (the default; rules list what
    /// to stop), or `deny` / `approve` (rules list what may run: an
    /// allow-list, where every command a line runs must be named).
    pub other_commands: Action,
}

impl Default for SshRules {
    fn default() -> Self {
        SshRules {
            shell: Action::Allow,
            sftp: Action::Deny,
            port_forwarding: Action::Deny,
            agent_forwarding: Action::Deny,
            x11: Action::Deny,
            other_commands: Action::Allow,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub kinds: Vec<String>,
    /// SSH: globs on whole command lines and on each command they run.
    pub commands: Vec<String>,
    pub methods: Vec<String>,
    pub path: Option<String>,
    pub unbounded: bool,
    /// Empty means "whoever the caller is".
    pub groups: Vec<String>,
    pub action: Action,
    pub message: Option<String>,
    /// For `approve`: who may approve, instead of the target's `approvers`.
    pub approvers: Vec<String>,
    /// For `approve`: distinct approvers needed, instead of the target's `quorum`.
    pub quorum: Option<u8>,
    /// For `approve`: a request needs the requester's reason.
    pub reason: bool,
}

#[derive(Debug, Clone)]
pub struct MaskingProfile {
    pub detectors: Vec<String>,
    pub columns: BTreeMap<String, String>,
    /// JSON field paths and styles, e.g. `$.users[*].ssn` → `redact`.
    pub fields: BTreeMap<String, String>,
    /// The key of the `hash` style (from `hash_key_env`): pseudonyms are
    /// deterministic per key, so joins across results keep working.
    pub hash_key: Option<sluice_masking::HashKey>,
    /// Strict column rules (on unless `strict_columns = false`): a statement
    /// may use a column under a rule only as a plain result column; any other
    /// use (in an expression, a condition, a view or table definition, a
    /// whole-row reference, ...) is refused with `42501`.
    pub strict_columns: bool,
    /// Custom entities, compiled once here (every session shares them).
    pub entities: std::sync::Arc<[sluice_masking::Entity]>,
}

/// One problem found in a configuration file, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Everything wrong with one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{}:{}: {}", self.file, d.line, d.col, d.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Parses and validates a configuration.
///
/// `file` names the source in diagnostics; `env` resolves the environment variables
/// named by `password_env` / `value_env` (a missing one is an error naming it).
pub fn parse(
    source: &str,
    file: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let fail = |diagnostics| ConfigError {
        file: file.to_owned(),
        diagnostics,
    };
    let (raw, mut diagnostics) = parse_structure(source);
    let Some(raw) = raw else {
        return Err(fail(diagnostics));
    };
    match validate::validate(raw, source, &env) {
        Ok(config) if diagnostics.is_empty() => Ok(config),
        Ok(_) => Err(fail(diagnostics)),
        Err(more) => {
            diagnostics.extend(more);
            diagnostics.sort_by_key(|d| (d.line, d.col));
            diagnostics.dedup();
            Err(fail(diagnostics))
        }
    }
}

/// Most structural problems listed for one file.
const MAX_STRUCTURAL: usize = 50;

/// Reads the file's structure, listing every problem the TOML reader finds,
/// not just the first: after each one the offending `key = value` line is
/// blanked (same length, so positions stay right) and the file read again.
/// A problem that blanking cannot get past (a missing key, a broken table
/// header or a multi-line value) ends the list. `None`: no usable structure.
fn parse_structure(source: &str) -> (Option<schema::RawConfig>, Vec<Diagnostic>) {
    let mut text = source.to_owned();
    let mut diagnostics = Vec::new();
    // Keys whose lines were blanked: their absence is no news.
    let mut blanked: Vec<String> = Vec::new();
    let sorted = |mut d: Vec<Diagnostic>| {
        d.sort_by_key(|d| (d.line, d.col));
        d
    };
    loop {
        let e = match toml::from_str::<schema::RawConfig>(&text) {
            Ok(raw) => return (Some(raw), sorted(diagnostics)),
            Err(e) => e,
        };
        if blanked
            .iter()
            .any(|k| e.message().starts_with(&format!("missing field `{k}`")))
        {
            return (None, sorted(diagnostics));
        }
        let span = e.span();
        let (line, col) = span
            .as_ref()
            .map(|s| line_col(source, s.start))
            .unwrap_or((1, 1));
        let line_text = source.lines().nth(line - 1).unwrap_or("");
        diagnostics.push(Diagnostic {
            line,
            col,
            message: plain_message(e.message(), line_text),
        });
        // Only a whole `key = value` on one line can be blanked safely.
        let trimmed = line_text.trim();
        let single = trimmed.contains('=')
            && !trimmed.starts_with('[')
            && !trimmed.ends_with(['[', '{', ','])
            && !trimmed.contains("\"\"\"")
            && !trimmed.contains("'''");
        if span.is_none() || !single || diagnostics.len() >= MAX_STRUCTURAL {
            return (None, sorted(diagnostics));
        }
        if let Some((key, _)) = trimmed.split_once('=') {
            blanked.push(key.trim().trim_matches('"').to_owned());
        }
        let start = text
            .as_bytes()
            .iter()
            .take(span.as_ref().map_or(0, |s| s.start))
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let end = text[start..].find('\n').map_or(text.len(), |p| start + p);
        if text[start..end].trim().is_empty() {
            return (None, sorted(diagnostics));
        }
        let blank = " ".repeat(end - start);
        text.replace_range(start..end, &blank);
    }
}

/// The TOML reader's message in the words of a config file.
fn plain_message(message: &str, line: &str) -> String {
    let m = message.trim_end().replace('\n', " ");
    // An unquoted text value (`listen = 127.0.0.1:6432`) reads as a broken
    // number or a bare word.
    let value = line.split_once('=').map(|(_, v)| v.trim()).unwrap_or("");
    let unquoted_text = !value.is_empty()
        && !value.starts_with(['"', '\'', '[', '{'])
        && value.parse::<f64>().is_err()
        && !matches!(value, "true" | "false");
    if unquoted_text
        && (m.contains("invalid float")
            || m.contains("invalid number")
            || m.contains("expected nothing")
            || m.contains("invalid string")
            || m.contains("string values must be quoted")
            || m.contains("expected newline"))
    {
        return format!("`{value}` must be quoted: write \"{value}\"");
    }
    let mut m = if m.starts_with("unknown field") {
        m.replace("unknown field", "unknown key")
            .replace(", expected one of", "; the keys here are")
    } else if m.starts_with("unknown variant") {
        m.replace("unknown variant", "unknown value")
            .replace(", expected one of", "; it may be one of")
    } else {
        m.replace("missing field", "missing key")
    };
    // `invalid type: string "two", expected i64` → `wrong type: expected a
    // whole number, found string "two"`.
    if let Some((found, expected)) = m
        .strip_prefix("invalid type: ")
        .and_then(|r| r.rsplit_once(", expected "))
    {
        m = format!("wrong type: expected {expected}, found {found}");
    }
    for (rust, words) in [
        ("expected i64", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u8", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list [...]"),
        ("expected a map", "expected a table"),
        ("found integer `", "found the number `"),
    ] {
        m = m.replace(rust, words);
    }
    m
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let col = source[line_start..offset].chars().count() + 1;
    (line, col)
}

/// Parses `250ms`, `30s`, `5m`, `2h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().ok()?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    Some(d)
}

#[cfg(test)]
mod tests;
