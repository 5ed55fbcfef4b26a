//! The TOML contract exactly as operators write it.
//!
//! These types mirror the file one to one and keep every value's source span
//! (`Spanned`), so validation can point at the offending `line:col`. Nothing here
//! is used on the data path: [`crate::validate`] turns it into [`crate::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub gateway: RawGateway,
    pub identity: Option<Spanned<RawIdentity>>,
    pub audit: Option<RawAudit>,
    pub tls: Option<Spanned<RawTls>>,
    #[serde(default, rename = "target")]
    pub targets: Vec<Spanned<RawTarget>>,
    #[serde(default)]
    pub guardrails: BTreeMap<String, Spanned<RawGuardrails>>,
    #[serde(default)]
    pub masking: BTreeMap<String, Spanned<RawMasking>>,
    pub approvals: Option<Spanned<RawApprovals>>,
    pub state: Option<Spanned<RawState>>,
    pub console: Option<Spanned<RawConsole>>,
}

/// `[console]`: the web console's OpenID Connect sign-in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    pub client_id: Option<Spanned<String>>,
    pub client_secret_env: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub scopes: Option<Spanned<String>>,
}

/// `[state]`: where approvals, grants and audit anchors are shared between
/// gateway instances.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub postgres: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    pub tls: Option<Spanned<UpstreamTls>>,
    pub ca: Option<Spanned<String>>,
    pub instance: Option<Spanned<String>>,
    pub lease: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    pub timeout: Option<Spanned<String>>,
    pub grant_ttl: Option<Spanned<String>>,
    pub mode: Option<Spanned<ApprovalMode>>,
    #[serde(default)]
    pub notify: Vec<Spanned<String>>,
    pub max_pending: Option<Spanned<i64>>,
}

/// What a session does while its statement waits for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// The session pauses until a decision or the timeout.
    #[default]
    Wait,
    /// The statement is refused at once with the request's id; once approved,
    /// the same requester re-runs it within `grant_ttl`.
    Nowait,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub shards: Option<Spanned<i64>>,
    pub admin: Option<Spanned<String>>,
    /// Serve the admin listener (API and console) over TLS with `[tls]`.
    pub admin_tls: Option<Spanned<bool>>,
    pub drain_timeout: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub head_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub pin_cores: bool,
    pub io: Option<Spanned<IoDriver>>,
    pub buffer_size: Option<Spanned<i64>>,
    pub max_message: Option<Spanned<i64>>,
}

/// Which monoio driver a shard runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IoDriver {
    /// io_uring where the kernel allows it, epoll otherwise.
    #[default]
    Auto,
    /// io_uring only: fail to start rather than fall back.
    IoUring,
    /// epoll only.
    Epoll,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub issuer: Spanned<String>,
    pub audience: Spanned<String>,
    pub jwks: Option<Spanned<String>>,
    pub jwks_refresh: Option<Spanned<String>>,
    pub groups_claim: Option<Spanned<String>>,
    pub leeway: Option<Spanned<String>>,
    pub algorithms: Option<Vec<Spanned<String>>>,
    pub hmac_secret_env: Option<Spanned<String>>,
    pub require_typ: Option<Spanned<String>>,
    #[serde(default)]
    pub admin_groups: Vec<Spanned<String>>,
    /// SSH: certificate authorities whose user certificates log in.
    #[serde(default)]
    pub ssh_user_ca: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub dir: Spanned<String>,
    #[serde(default)]
    pub durability: Durability,
    pub flush_interval_ms: Option<Spanned<i64>>,
    pub signing_key: Option<Spanned<String>>,
    pub segment_size: Option<Spanned<i64>>,
    pub segment_age: Option<Spanned<String>>,
    pub retention_age: Option<Spanned<String>>,
    pub retention_size: Option<Spanned<i64>>,
    pub checkpoint_every: Option<Spanned<i64>>,
    pub checkpoint_interval: Option<Spanned<String>>,
}

/// When a command's audit record must be durable relative to forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Forwarded only after its record is on disk.
    #[default]
    Strict,
    /// Forwarded once enqueued; on disk within the flush interval.
    Batched,
}

impl Durability {
    /// As the config file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Strict => "strict",
            Durability::Batched => "batched",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub name: Spanned<String>,
    pub protocol: Spanned<Protocol>,
    pub listen: Spanned<String>,
    pub upstream: Spanned<String>,
    pub credentials: Option<Spanned<RawCredentials>>,
    pub access: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub approvers: Vec<Spanned<String>>,
    pub quorum: Option<Spanned<i64>>,
    pub approval_mode: Option<Spanned<ApprovalMode>>,
    pub approval_timeout: Option<Spanned<String>>,
    pub guardrails: Option<Spanned<String>>,
    pub masking: Option<Spanned<String>>,
    pub database: Option<Spanned<String>>,
    #[serde(default)]
    pub require_tls: Option<Spanned<bool>>,
    /// HTTP: judge a method override header or `_method` in the query as the
    /// method the upstream framework will run, instead of refusing it.
    #[serde(default)]
    pub method_override: Option<Spanned<bool>>,
    pub upstream_tls: Option<Spanned<UpstreamTls>>,
    pub upstream_ca: Option<Spanned<String>>,
    /// SSH: the upstream's host key, pinned (`ssh-ed25519 AAAA...`).
    pub upstream_host_key: Option<Spanned<String>>,
    /// SSH: or an OpenSSH known_hosts file holding the upstream's keys.
    pub upstream_known_hosts: Option<Spanned<String>>,
    /// SSH: Sluice's own host key file (created 0600 on first start).
    pub host_key: Option<Spanned<String>>,
}

/// How the gateway secures its connection to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamTls {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS, without checking the server's certificate (libpq's `sslmode=require`).
    Require,
    /// TLS, verifying the certificate against `upstream_ca` and the host name.
    Verify,
}

/// The wire protocol a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Postgres,
    Mysql,
    Http,
    Tcp,
    Ssh,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
            Protocol::Ssh => "ssh",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredentials {
    pub user: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    pub header: Option<Spanned<String>>,
    /// HTTP: inject the credential as this query parameter instead of a header.
    pub param: Option<Spanned<String>>,
    pub value_env: Option<Spanned<String>>,
    /// SSH: the private key Sluice logs in to the upstream with.
    pub key_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuardrails {
    #[serde(default)]
    pub rules: Vec<Spanned<RawRule>>,
    /// User-defined functions whose calls are judged by the statement around
    /// them rather than as opaque code.
    #[serde(default)]
    pub functions: Vec<Spanned<String>>,
    /// SSH: interactive shells (`allow`, `deny`, `approve`).
    pub shell: Option<Spanned<Action>>,
    /// SSH: the sftp subsystem (`allow` or `deny`; default deny).
    pub sftp: Option<Spanned<Action>>,
    pub port_forwarding: Option<Spanned<Action>>,
    pub agent_forwarding: Option<Spanned<Action>>,
    pub x11: Option<Spanned<Action>>,
    /// SSH: commands no rule names (`allow`; `deny`/`approve`: an allow-list).
    pub other_commands: Option<Spanned<Action>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub kinds: Option<Vec<Spanned<String>>>,
    /// SSH: globs on command lines (`rm -rf *`, `systemctl restart *`).
    pub commands: Option<Vec<Spanned<String>>>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub path: Option<Spanned<String>>,
    pub unbounded: Option<bool>,
    pub groups: Option<Vec<Spanned<String>>>,
    pub action: Spanned<Action>,
    pub approvers: Option<Vec<Spanned<String>>>,
    pub quorum: Option<Spanned<i64>>,
    /// `approve`: the requester must say why (a request without a reason is
    /// refused, saying how to give one).
    pub reason: Option<Spanned<bool>>,
    pub message: Option<String>,
}

/// What a matching rule does with a statement or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Deny,
    Approve,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMasking {
    #[serde(default)]
    pub detectors: Vec<Spanned<String>>,
    #[serde(default)]
    pub columns: BTreeMap<String, Spanned<String>>,
    /// JSON field paths (`$.users[*].ssn`) and their styles (HTTP targets).
    #[serde(default)]
    pub fields: BTreeMap<String, Spanned<String>>,
    /// The environment variable holding the key of the `hash` style.
    pub hash_key_env: Option<Spanned<String>>,
    /// Refuse statements that use a protected column other than as a plain
    /// result column (default true).
    pub strict_columns: Option<bool>,
    /// Custom entities: `name = { pattern = "...", validator = "luhn" }`.
    #[serde(default)]
    pub entities: BTreeMap<String, Spanned<RawEntity>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntity {
    pub pattern: Spanned<String>,
    pub validator: Option<Spanned<String>>,
}
