//! One vocabulary for everything a driver records (logins, sessions,
//! commands, results, approvals, recordings, reloads and admin actions): a
//! record type has the same fields whether PostgreSQL, HTTP, SSH or TCP
//! wrote it (`client` is always the caller's address, `reason` always why,
//! `kinds` always a command's array of statement kinds), encoded here once. [`FIELDS`] names every field any record has, so
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

/// Where a command came from: each protocol names its unit differently.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    /// PostgreSQL: the message that carried it (`query`, `parse`, `bind`,
    /// `function_call`).
    Message(&'a str),
    /// HTTP: the method as judged (after any override header).
    Method(&'a str),
    /// SSH: the channel request (`exec`, `shell`, `shell-line`, ...).
    Request(&'a str),
}

/// What the statement analysis says of a PostgreSQL command.
#[derive(Clone, Copy)]
pub struct Flags {
    pub writes: bool,
    pub opaque: bool,
    pub unbounded: bool,
}

/// A command a caller sent, and what the policy decided (`allow`, `deny`,
/// `approve`; SSH also `observed` and `replaced`).
pub struct Command<'a, K = std::iter::Empty<&'a str>> {
    pub session: &'a str,
    /// The command's number in its session (PostgreSQL).
    pub cmd: Option<u64>,
    pub target: &'a str,
    pub subject: &'a str,
    pub protocol: &'a str,
    pub via: Via<'a>,
    pub text: Option<&'a [u8]>,
    /// The statement kinds the classifier found (PostgreSQL).
    pub kinds: Option<K>,
    pub flags: Option<Flags>,
    pub decision: &'a str,
    /// The approval it ran under, or the one it waits for.
    pub approval: Option<u64>,
    /// The rule that decided (1-based).
    pub rule: Option<u64>,
    /// Who may approve it (a prepared statement held at each execution).
    pub approvers: Option<&'a [String]>,
    pub reason: Option<&'a str>,
    /// SSH lines read off the screen: what the rules would have said, and
    /// how many lines went by unrecorded before this one.
    pub observed: Option<Observed<'a>>,
}

/// A shell line Sluice saw on the screen rather than judged before it ran.
#[derive(Clone, Copy)]
pub struct Observed<'a> {
    pub rules: &'a str,
    pub source: &'a str,
    pub not_recorded_before: u64,
}

impl<'a> Command<'a> {
    /// A command with only the common fields set.
    pub fn new(
        session: &'a str,
        target: &'a str,
        subject: &'a str,
        protocol: &'a str,
        via: Via<'a>,
        decision: &'a str,
    ) -> Self {
        Command {
            session,
            cmd: None,
            target,
            subject,
            protocol,
            via,
            text: None,
            kinds: None,
            flags: None,
            decision,
            approval: None,
            rule: None,
            approvers: None,
            reason: None,
            observed: None,
        }
    }
}

impl<'a, K> Command<'a, K> {
    /// The same command with its statement kinds.
    pub fn with_kinds<L>(self, kinds: L) -> Command<'a, L> {
        Command {
            session: self.session,
            cmd: self.cmd,
            target: self.target,
            subject: self.subject,
            protocol: self.protocol,
            via: self.via,
            text: self.text,
            kinds: Some(kinds),
            flags: self.flags,
            decision: self.decision,
            approval: self.approval,
            rule: self.rule,
            approvers: self.approvers,
            reason: self.reason,
            observed: self.observed,
        }
    }
}

/// What came back for one or more commands.
pub struct CommandResult<'a> {
    pub session: &'a str,
    pub target: &'a str,
    pub subject: &'a str,
    /// The commands it answers (PostgreSQL: a pipeline up to its Sync).
    pub cmds: Option<&'a [u64]>,
    /// HTTP: the response status.
    pub status: Option<u64>,
    pub rows: Option<u64>,
    pub bytes: u64,
    pub duration_us: u64,
    /// Values masked, by detector or column rule.
    pub masked: &'a [(&'a str, u64)],
    pub error: Option<&'a str>,
}

/// An approval request changed (`requested`, `approved`, `denied`, ...).
pub struct Approval<'a> {
    pub action: &'a str,
    pub id: u64,
    pub state: &'a str,
    pub target: &'a str,
    pub requester: &'a str,
    /// Who acted: the requester, an approver, or the gateway.
    pub subject: &'a str,
    pub session: &'a str,
    /// A word for what is held (`DELETE`, `POST`, `rm`).
    pub summary: &'a str,
    pub text: &'a [u8],
    pub sha256: &'a str,
    pub params: &'a [String],
    pub database: &'a str,
    pub approvers: &'a [String],
    pub quorum: u64,
    pub approved_by: &'a [&'a str],
    pub justification: Option<&'a str>,
    /// The instance that holds the statement (several instances).
    pub instance: Option<&'a str>,
    pub reason: Option<&'a str>,
}

/// A session recording: `sealed` holds its size and SHA-256 once closed;
/// without it the record says a recording began.
pub struct Recording<'a> {
    pub session: &'a str,
    pub target: &'a str,
    pub subject: &'a str,
    pub file: &'a str,
    pub sealed: Option<(u64, &'a str)>,
}

/// The gateway read its configuration again (a signal, a file change or
/// the admin API); `error` when the new one was refused.
pub struct Reload<'a> {
    pub config: &'a str,
    pub error: Option<&'a str>,
}

/// An admin API caller asked for an action (`reload`).
pub struct AdminAction<'a> {
    pub action: &'a str,
    pub subject: &'a str,
    pub error: Option<&'a str>,
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

impl<'k, K> Event for Command<'_, K>
where
    K: Iterator<Item = &'k str> + Clone,
{
    fn encode(&self, out: &mut Vec<u8>) {
        let rec = Rec::begin(out, "command", now_ms())
            .str("session", self.session)
            .opt_num("cmd", self.cmd)
            .str("target", self.target)
            .str("subject", self.subject)
            .str("protocol", self.protocol);
        let mut rec = match self.via {
            Via::Message(m) => rec.str("message", m),
            Via::Method(m) => rec.str("method", m),
            Via::Request(r) => rec.str("request", r),
        };
        if let Some(text) = self.text {
            rec = rec.text("text", text);
        }
        if let Some(kinds) = &self.kinds {
            rec = rec.strs("kinds", kinds.clone());
        }
        if let Some(f) = self.flags {
            rec = rec
                .bool("writes", f.writes)
                .bool("opaque", f.opaque)
                .bool("unbounded", f.unbounded);
        }
        rec = rec
            .str("decision", self.decision)
            .opt_num("approval", self.approval)
            .opt_num("rule", self.rule);
        if let Some(approvers) = self.approvers {
            rec = rec.strs("approvers", approvers);
        }
        rec = rec.opt_str("reason", self.reason);
        if let Some(o) = self.observed {
            rec = rec
                .str("rules", o.rules)
                .str("source", o.source)
                .num("not_recorded_before", o.not_recorded_before);
        }
        rec.end()
    }
}

impl Event for CommandResult<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut rec = Rec::begin(out, "result", now_ms())
            .str("session", self.session)
            .str("target", self.target)
            .str("subject", self.subject);
        if let Some(cmds) = self.cmds {
            rec = rec.ids("cmds", cmds.iter().copied());
        }
        rec.opt_num("status", self.status)
            .opt_num("rows", self.rows)
            .num("bytes", self.bytes)
            .num("duration_us", self.duration_us)
            .counts("masked", self.masked)
            .opt_str("error", self.error)
            .end()
    }
}

impl Event for Approval<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        Rec::begin(out, "approval", now_ms())
            .str("action", self.action)
            .num("approval", self.id)
            .str("state", self.state)
            .str("target", self.target)
            .str("requester", self.requester)
            .str("subject", self.subject)
            .str("session", self.session)
            .str("summary", self.summary)
            .text("text", self.text)
            .str("sha256", self.sha256)
            .strs("params", self.params)
            .str("database", self.database)
            .strs("approvers", self.approvers)
            .num("quorum", self.quorum)
            .strs("approved_by", self.approved_by)
            .opt_str("justification", self.justification)
            .opt_str("instance", self.instance)
            .opt_str("reason", self.reason)
            .end()
    }
}

impl Event for Recording<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        let kind = match self.sealed {
            Some(_) => "recording",
            None => "recording_start",
        };
        let rec = Rec::begin(out, kind, now_ms())
            .str("session", self.session)
            .str("target", self.target)
            .str("subject", self.subject)
            .str("file", self.file);
        match self.sealed {
            Some((bytes, sha256)) => rec.num("bytes", bytes).str("sha256", sha256).end(),
            None => rec.end(),
        }
    }
}

impl Event for Reload<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        Rec::begin(out, "reload", now_ms())
            .str("config", self.config)
            .bool("ok", self.error.is_none())
            .opt_str("error", self.error)
            .end()
    }
}

impl Event for AdminAction<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        Rec::begin(out, "admin", now_ms())
            .str("action", self.action)
            .str("subject", self.subject)
            .bool("ok", self.error.is_none())
            .opt_str("error", self.error)
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
    // Added after the columns above (an approval's word for what it holds,
    // which older logs wrote as a string `kinds`): last, so every earlier
    // column keeps its place.
    "summary",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(e: &dyn Event) -> serde_json::Map<String, serde_json::Value> {
        let mut out = Vec::new();
        e.encode(&mut out);
        match serde_json::from_slice(&out).unwrap() {
            serde_json::Value::Object(m) => m,
            v => panic!("not an object: {v}"),
        }
    }

    #[test]
    fn every_event_writes_only_fields_export_has_columns_for() {
        let groups = ["dba".to_owned()];
        let approvers = ["ops".to_owned()];
        let full_command = Command {
            cmd: Some(3),
            text: Some(b"DELETE FROM t WHERE id = 1"),
            flags: Some(Flags {
                writes: true,
                opaque: false,
                unbounded: false,
            }),
            approval: Some(7),
            rule: Some(2),
            approvers: Some(&approvers),
            reason: Some("why"),
            observed: Some(Observed {
                rules: "allow",
                source: "screen",
                not_recorded_before: 0,
            }),
            ..Command::new("s", "db", "ana", "postgres", Via::Message("query"), "allow")
        }
        .with_kinds(["delete"].into_iter());
        let events: Vec<Box<dyn Event>> = vec![
            Box::new(full_command),
            Box::new(Command::new(
                "s",
                "api",
                "ana",
                "http",
                Via::Method("GET"),
                "allow",
            )),
            Box::new(Command::new(
                "s",
                "host",
                "ana",
                "ssh",
                Via::Request("exec"),
                "deny",
            )),
            Box::new(CommandResult {
                session: "s",
                target: "db",
                subject: "ana",
                cmds: Some(&[1, 2]),
                status: Some(200),
                rows: Some(1),
                bytes: 10,
                duration_us: 5,
                masked: &[("email", 1)],
                error: Some("boom"),
            }),
            Box::new(Approval {
                action: "approved",
                id: 1,
                state: "approved",
                target: "db",
                requester: "ana",
                subject: "bob",
                session: "s",
                summary: "DELETE",
                text: b"DELETE FROM t",
                sha256: "00",
                params: &groups,
                database: "app",
                approvers: &approvers,
                quorum: 1,
                approved_by: &["bob"],
                justification: Some("ticket 1"),
                instance: Some("gw-a"),
                reason: Some("ok"),
            }),
            Box::new(Recording {
                session: "s",
                target: "host",
                subject: "ana",
                file: "x.cast",
                sealed: Some((10, "00")),
            }),
            Box::new(Reload {
                config: "sluice.toml",
                error: Some("bad"),
            }),
            Box::new(AdminAction {
                action: "reload",
                subject: "ana",
                error: None,
            }),
            Box::new(AuthFailure {
                target: "db",
                protocol: "postgres",
                client: "127.0.0.1:1",
                reason: "expired",
                startup_user: Some("u"),
            }),
        ];
        for e in &events {
            let m = keys(e.as_ref());
            for k in m.keys() {
                assert!(FIELDS.contains(&k.as_str()), "{k} has no export column");
            }
        }
        // One name per idea across protocols: the unit of a command.
        let pg = keys(events[0].as_ref());
        assert_eq!(pg["message"], "query");
        assert_eq!(pg["kinds"][0], "delete");
        assert_eq!(pg["writes"], true);
        assert_eq!(keys(events[1].as_ref())["method"], "GET");
        assert_eq!(keys(events[2].as_ref())["request"], "exec");
        // An approval names what it holds in `summary`, not in `kinds`
        // (which is always a command's array of statement kinds).
        let approval = keys(events[4].as_ref());
        assert_eq!(approval["summary"], "DELETE");
        assert!(!approval.contains_key("kinds"));
    }
}
