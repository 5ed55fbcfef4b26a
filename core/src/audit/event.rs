//! One vocabulary for what every protocol records about logins and sessions:
//! a record type has the same fields whether PostgreSQL, HTTP, SSH or TCP
//! wrote it (`client` is always the caller's address, `reason` always why),
//! encoded here once. [`FIELDS`] names every field any record has, so
//! `sluice audit export --format csv` has a column for each.

use super::now_ms;
use super::record::Rec;

/// A caller who could not log in (a token or certificate refused).
pub struct AuthFailure<'a> {
    pub target: &'a str,
    pub protocol: &'a str,
    pub client: &'a str,
    pub reason: &'a str,
    /// PostgreSQL: the user name in the client's startup message.
    pub startup_user: Option<&'a str>,
}

/// A caller who logged in but whose groups may not reach the target.
pub struct AccessDenied<'a> {
    pub target: &'a str,
    pub protocol: &'a str,
    pub client: &'a str,
    pub subject: &'a str,
    pub groups: &'a [String],
}

/// A session began (a TCP pass-through has no caller: no subject).
pub struct SessionStart<'a> {
    pub session: Option<&'a str>,
    pub target: &'a str,
    pub protocol: &'a str,
    pub subject: Option<&'a str>,
    pub groups: &'a [String],
    pub client: &'a str,
    /// Whether the client spoke TLS to Sluice (where it may).
    pub tls: Option<bool>,
    /// The shard that serves it (the SSH endpoint runs beside the shards).
    pub shard: Option<usize>,
    /// How the caller logged in, where there is more than one way.
    pub login: Option<&'a str>,
}

/// A session ended, with what it moved where that is counted.
pub struct SessionEnd<'a> {
    pub session: Option<&'a str>,
    pub target: &'a str,
    pub protocol: &'a str,
    pub subject: Option<&'a str>,
    /// Where the start record does not tie the end to its caller: who it was.
    pub client: Option<&'a str>,
    pub duration_ms: Option<u64>,
    pub commands: Option<u64>,
    pub bytes_from_client: Option<u64>,
    pub bytes_to_client: Option<u64>,
}

/// An event that encodes itself as one record body.
pub trait Event {
    fn encode(&self, out: &mut Vec<u8>);
}

impl Event for AuthFailure<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        let rec = Rec::begin(out, "auth_failure", now_ms())
            .str("target", self.target)
            .str("protocol", self.protocol)
            .str("client", self.client);
        let rec = match self.startup_user {
            Some(user) => rec.str("startup_user", user),
            None => rec,
        };
        rec.str("reason", self.reason).end()
    }
}

impl Event for AccessDenied<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        Rec::begin(out, "access_denied", now_ms())
            .str("target", self.target)
            .str("protocol", self.protocol)
            .str("client", self.client)
            .str("subject", self.subject)
            .strs("groups", self.groups)
            .end()
    }
}

/// The fields a session's records open with.
fn session_head<'o>(
    out: &'o mut Vec<u8>,
    kind: &str,
    session: Option<&str>,
    target: &str,
    protocol: &str,
) -> Rec<'o> {
    let mut rec = Rec::begin(out, kind, now_ms());
    if let Some(session) = session {
        rec = rec.str("session", session);
    }
    rec.str("target", target).str("protocol", protocol)
}

impl Event for SessionStart<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut rec = session_head(
            out,
            "session_start",
            self.session,
            self.target,
            self.protocol,
        );
        if let Some(subject) = self.subject {
            rec = rec.str("subject", subject).strs("groups", self.groups);
        }
        rec = rec.str("client", self.client);
        if let Some(tls) = self.tls {
            rec = rec.bool("tls", tls);
        }
        if let Some(shard) = self.shard {
            rec = rec.num("shard", shard as u64);
        }
        if let Some(login) = self.login {
            rec = rec.str("login", login);
        }
        rec.end()
    }
}

impl Event for SessionEnd<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut rec = session_head(out, "session_end", self.session, self.target, self.protocol);
        if let Some(subject) = self.subject {
            rec = rec.str("subject", subject);
        }
        if let Some(client) = self.client {
            rec = rec.str("client", client);
        }
        for (key, value) in [
            ("duration_ms", self.duration_ms),
            ("commands", self.commands),
            ("bytes_from_client", self.bytes_from_client),
            ("bytes_to_client", self.bytes_to_client),
        ] {
            if let Some(v) = value {
                rec = rec.num(key, v);
            }
        }
        rec.end()
    }
}

/// Every field a record may have, in the order `export --format csv` writes
/// them: the chain's and the common ones first, then by record type.
/// `core/tests/demo.rs` checks every field of a real log is among them.
pub const FIELDS: &[&str] = &[
    "seq",
    "ts",
    // `ts` (milliseconds since the epoch) as RFC 3339 in UTC, for people.
    "time",
    "type",
    "subject",
    "target",
    "session",
    "decision",
    "kinds",
    "text",
    "approval",
    "approvers",
    "rows",
    "bytes",
    "error",
    "reason",
    // Sessions and logins.
    "protocol",
    "client",
    "groups",
    "startup_user",
    "login",
    "tls",
    "shard",
    "duration_ms",
    "commands",
    "bytes_from_client",
    "bytes_to_client",
    // Commands.
    "cmd",
    "message",
    "method",
    "request",
    "writes",
    "opaque",
    "unbounded",
    "rule",
    "rules",
    "source",
    "not_recorded_before",
    "text_truncated",
    "text_sha256",
    "text_len",
    // Results.
    "cmds",
    "status",
    "duration_us",
    "masked",
    // Approvals.
    "action",
    "state",
    "requester",
    "sha256",
    "params",
    "database",
    "quorum",
    "approved_by",
    "justification",
    "instance",
    // Recordings.
    "file",
    // The gateway's own: reloads, the admin API, checkpoints, recovery.
    "config",
    "ok",
    "records",
    "sig",
    "last_seq",
    "torn_bytes",
    "prev",
];
