//! Approvals shared by several gateway instances through PostgreSQL
//! (`[state] postgres`).
//!
//! Requests, votes and grants are rows, and every transition is one
//! transaction that changes a row only from the state it was read in
//! (`UPDATE ... WHERE state = 'pending' RETURNING`, a vote under `FOR UPDATE`),
//! so two approvers or two instances never both decide a request, and a grant
//! is spent once even when the same statement arrives on two instances at once.
//! Ids come from a sequence and are never reused.
//!
//! A decision wakes the instance holding the statement through
//! `LISTEN/NOTIFY`; notifications are only a hint (they are lost while a
//! connection is down), so the listener also polls the requests its sessions
//! wait on every second and after every reconnect. The listener renews this
//! instance's lease; the requests of an instance whose lease ran out are
//! marked `abandoned` by the others.
//!
//! The calls block on the network: [`super::Approvals`] runs them on worker
//! threads of its own, never on a shard.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls, Row};
use sluice_config::State as StateConfig;

use super::store::{
    ApprovalStore, Decision, Key, NewRequest, OpenError, Request, State, StoreError, Vote,
    VoteError, Voted, Voter, MAX_PENDING_PER_REQUESTER,
};
use crate::{info, warn};

/// The notification channel decisions are announced on (payload: the id).
const CHANNEL: &str = "sluice_approvals";
/// Connections kept open for the workers' calls.
const POOL: usize = 4;
/// How often the listener polls waited-on requests and renews the lease.
const TICK: Duration = Duration::from_secs(1);
/// Taken (per transaction) while migrating, so instances starting together
/// migrate one after the other.
const MIGRATION_LOCK: i64 = 0x736c_7569_6365_0001;

/// The schema, one migration per entry; entry `i` is version `i + 1`. Never
/// edit an entry that has shipped: add one.
const MIGRATIONS: &[&str] = &[r#"
CREATE SEQUENCE sluice_approval_ids;
CREATE TABLE sluice_instances (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    started_at  bigint NOT NULL,
    lease_until bigint NOT NULL
);
CREATE TABLE sluice_approvals (
    id           bigint PRIMARY KEY DEFAULT nextval('sluice_approval_ids'),
    state        text NOT NULL,
    instance     text NOT NULL,
    requester    text NOT NULL,
    target       text NOT NULL,
    protocol     text NOT NULL,
    summary      text NOT NULL,
    statement    text NOT NULL,
    sha256       bytea NOT NULL,
    params       text[] NOT NULL,
    database     text NOT NULL,
    session      text NOT NULL,
    justification text,
    approvers    text[] NOT NULL,
    quorum       integer NOT NULL,
    denied_by    text,
    reason       text,
    created_at   bigint NOT NULL,
    expires_at   bigint NOT NULL,
    decided_at   bigint,
    grant_ttl_ms bigint NOT NULL,
    grant_until  bigint,
    used         boolean NOT NULL DEFAULT false
);
ALTER SEQUENCE sluice_approval_ids OWNED BY sluice_approvals.id;
-- The pending few, apart from the growing history: listing them, counting
-- them (per requester), expiring them.
CREATE INDEX sluice_approvals_pending ON sluice_approvals (id) WHERE state = 'pending';
CREATE INDEX sluice_approvals_pending_by ON sluice_approvals (requester) WHERE state = 'pending';
CREATE INDEX sluice_approvals_grants ON sluice_approvals (requester, target, sha256)
    WHERE state = 'approved' AND NOT used;
CREATE TABLE sluice_approval_votes (
    approval bigint NOT NULL REFERENCES sluice_approvals (id) ON DELETE CASCADE,
    subject  text NOT NULL,
    at       bigint NOT NULL,
    PRIMARY KEY (approval, subject)
);
CREATE TABLE sluice_audit_checkpoints (
    log_key   text NOT NULL,
    instance  text NOT NULL,
    seq       bigint NOT NULL,
    hash      text NOT NULL,
    signature text NOT NULL,
    at        bigint NOT NULL,
    PRIMARY KEY (log_key, instance, seq)
);
"#];

/// A request's columns, with its votes, from `sluice_approvals AS a`.
const COLUMNS: &str = "a.id, a.state, a.instance, a.requester, a.target, a.protocol, a.summary, \
    a.statement, a.sha256, a.params, a.database, a.session, a.justification, a.approvers, a.quorum, a.denied_by, \
    a.reason, a.created_at, a.expires_at, a.decided_at, a.grant_ttl_ms, a.grant_until, a.used, \
    coalesce((SELECT array_agg(v.subject ORDER BY v.at, v.subject) \
              FROM sluice_approval_votes v WHERE v.approval = a.id), '{}') AS voters, \
    coalesce((SELECT array_agg(v.at ORDER BY v.at, v.subject) \
              FROM sluice_approval_votes v WHERE v.approval = a.id), '{}') AS voted_at";

/// The database's clock, in ms since the epoch.
const DB_NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";
/// Without a word from the store for this long, it is down.
const STALE: Duration = Duration::from_secs(5);
/// Instances gone this long (and holding nothing) leave `sluice_instances`.
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// Most requests a listing returns (the audit log has them all).
const LIST_LIMIT: i64 = 1000;

/// How to open a connection to the state database.
#[derive(Clone)]
pub struct Connector {
    config: postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Connector {
    /// From `[state]` (the password resolved from `password_env`).
    pub fn new(state: &StateConfig) -> Result<Connector, String> {
        let tls = crate::tls::client_config(state.tls, state.ca.as_deref(), "state.ca")?
            .map(|c| tokio_postgres_rustls::MakeRustlsConnect::new((*c).clone()));
        Connector::parse(
            &state.postgres,
            state.password.as_ref().map(|p| p.expose().to_owned()),
            tls,
            &state.instance,
        )
    }

    /// From a connection string given on the command line (`PGPASSWORD` for the
    /// password; `sslmode=require` encrypts without checking the certificate).
    /// `sslmode=verify-full` (or `verify-ca`) checks the server's certificate
    /// against `sslrootcert=FILE`; `sslmode=require` only encrypts.
    pub fn from_conninfo(conninfo: &str) -> Result<Connector, String> {
        use sluice_config::UpstreamTls;
        let mut mode = UpstreamTls::Disable;
        let mut root = None;
        let mut rest = Vec::new();
        for kv in conninfo.split_ascii_whitespace() {
            match kv.split_once('=') {
                Some(("sslmode", "require")) => mode = UpstreamTls::Require,
                Some(("sslmode", "verify-ca" | "verify-full")) => mode = UpstreamTls::Verify,
                Some(("sslmode", "disable" | "prefer" | "allow")) => {}
                Some(("sslmode", other)) => return Err(format!("unknown sslmode `{other}`")),
                Some(("sslrootcert", file)) => root = Some(file.to_owned()),
                _ => rest.push(kv),
            }
        }
        if mode == UpstreamTls::Verify && root.is_none() {
            return Err(
                "sslmode=verify-full needs sslrootcert=FILE (the CA certificates, PEM)".into(),
            );
        }
        let tls = crate::tls::client_config(mode, root.as_deref(), "sslrootcert")?
            .map(|c| tokio_postgres_rustls::MakeRustlsConnect::new((*c).clone()));
        Connector::parse(
            &rest.join(" "),
            std::env::var("PGPASSWORD").ok(),
            tls,
            "cli",
        )
    }

    fn parse(
        conninfo: &str,
        password: Option<String>,
        tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
        instance: &str,
    ) -> Result<Connector, String> {
        let mut config: postgres::Config = conninfo
            .parse()
            .map_err(|e| format!("the state database's connection string: {e}"))?;
        if let Some(p) = password {
            config.password(p);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(3));
        }
        if config.get_application_name().is_none() {
            config.application_name(&format!("sluice {instance}"));
        }
        // A store that vanished without closing the connection is noticed
        // within seconds, not hours: keepalives on an idle connection, a
        // bound on unacknowledged data on a busy one ...
        config.keepalives_idle(Duration::from_secs(5));
        config.keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3);
        config.tcp_user_timeout(Duration::from_secs(10));
        // ... and the server gives up on a call stuck behind a lock, or on a
        // transaction its client abandoned.
        let bounds = "-c statement_timeout=5000 -c lock_timeout=3000 \
                      -c idle_in_transaction_session_timeout=10000";
        let options = match config.get_options() {
            Some(o) => format!("{o} {bounds}"),
            None => bounds.to_owned(),
        };
        config.options(&options);
        if tls.is_some() {
            config.ssl_mode(postgres::config::SslMode::Require);
        }
        Ok(Connector { config, tls })
    }

    pub fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            None => self.config.connect(NoTls),
            Some(tls) => self.config.connect(tls.clone()),
        }
    }
}

/// A failure's words: the server's message, or the connection error's cause.
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Creates or brings up to date Sluice's tables. Safe with several instances
/// starting at once: the whole migration runs under one advisory lock.
pub fn migrate(client: &mut Client) -> Result<(), String> {
    let run = |client: &mut Client| -> Result<Result<(), String>, postgres::Error> {
        // Up to date: no DDL, no lock (a role without CREATE rights can run a
        // gateway once the schema is in place).
        let exists: bool = client
            .query_one("SELECT to_regclass('sluice_schema') IS NOT NULL", &[])?
            .get(0);
        let current: Option<i32> = match exists {
            false => None,
            true => client
                .query_one("SELECT max(version) FROM sluice_schema", &[])?
                .get(0),
        };
        if current == Some(MIGRATIONS.len() as i32) {
            return Ok(Ok(()));
        }
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS sluice_schema (\
               version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )?;
        let have: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM sluice_schema", &[])?
            .get(0);
        if have as usize > MIGRATIONS.len() {
            return Ok(Err(format!(
                "the state database's schema is at version {have}, newer than this gateway knows ({}): upgrade this instance",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(have as usize) {
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO sluice_schema (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )?;
            info!("state_schema_migrated", version = i + 1);
        }
        tx.commit()?;
        Ok(Ok(()))
    };
    run(client).map_err(|e| describe(&e))?
}

/// The approval store of a gateway sharing its state through PostgreSQL.
pub struct PgStore {
    connector: Connector,
    pool: Mutex<Vec<Client>>,
    watchers: Mutex<HashMap<u64, Vec<flume::Sender<()>>>>,
    /// This process's id in the store: the name, the pid and the start time
    /// (a restarted instance is a new one; its predecessor's requests are
    /// abandoned).
    pub instance: String,
    pub name: String,
    lease: Duration,
    /// Why the listener is not connected (None: it is).
    listener_down: Mutex<Option<String>>,
    /// The last call's failure, cleared by the next success.
    call_failed: Mutex<Option<String>>,
    /// The listener has been connected since (and not lost the store): only
    /// then may this instance judge others dead by their lease.
    connected_since: Mutex<Option<Instant>>,
    /// When the listener last heard from the store: one that stops answering
    /// (a connection that hangs) is down too.
    last_beat: Mutex<Option<Instant>>,
    /// The database's clock minus this machine's, in ms: every instance
    /// judges expiry, grants and leases by the one clock they share.
    offset_ms: AtomicI64,
    /// The newest checkpoint not yet anchored (the listener keeps trying).
    unanchored: Mutex<Option<crate::audit::Checkpoint>>,
    pub errors: AtomicU64,
    stop: AtomicBool,
}

impl PgStore {
    /// The store for `[state]`, and its listener thread (which migrates the
    /// schema and keeps the lease). Does not wait for the database: a gateway
    /// starts (and serves what needs no approval) while its store is down.
    pub fn start(state: &StateConfig) -> Result<Arc<PgStore>, String> {
        let started = crate::audit::now_ms();
        let store = Arc::new(PgStore {
            connector: Connector::new(state)?,
            pool: Mutex::new(Vec::new()),
            watchers: Mutex::new(HashMap::new()),
            instance: format!("{}-{}-{started}", state.instance, std::process::id()),
            name: state.instance.clone(),
            lease: state.lease,
            listener_down: Mutex::new(Some("not connected yet".into())),
            call_failed: Mutex::new(None),
            connected_since: Mutex::new(None),
            last_beat: Mutex::new(None),
            offset_ms: AtomicI64::new(0),
            unanchored: Mutex::new(None),
            errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("sluice-state".into())
            .spawn(move || listen(weak))
            .map_err(|e| format!("state listener thread: {e}"))?;
        Ok(store)
    }

    /// `now` (this machine's clock, ms) on the database's clock.
    fn db_now(&self, now: u64) -> i64 {
        now as i64 + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Why the store cannot be used now: the listener is not connected, the
    /// schema is not in place, or the store stopped answering it.
    fn unavailable(&self) -> Option<String> {
        if let Some(why) = lock(&self.listener_down).clone() {
            return Some(why);
        }
        match *lock(&self.last_beat) {
            Some(at) if at.elapsed() > STALE => {
                Some(format!("no answer for {}s", at.elapsed().as_secs()))
            }
            None => Some("not connected yet".into()),
            _ => None,
        }
    }

    /// Runs `f` on a pooled connection (opening one if none is idle). Fails
    /// at once while the store is known to be unavailable: no call queues
    /// behind a store that does not answer.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        if let Some(why) = self.unavailable() {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError(why));
        }
        let idle = lock(&self.pool).pop();
        let mut client = match idle {
            Some(c) if !c.is_closed() => c,
            _ => match self.connector.connect() {
                Ok(c) => c,
                Err(e) => return Err(self.failed(&e)),
            },
        };
        match f(&mut client) {
            Ok(v) => {
                *lock(&self.call_failed) = None;
                let mut pool = lock(&self.pool);
                if pool.len() < POOL {
                    pool.push(client);
                }
                Ok(v)
            }
            Err(e) => {
                // A statement the server refused leaves the connection usable.
                if e.as_db_error().is_some() && !client.is_closed() {
                    let mut pool = lock(&self.pool);
                    if pool.len() < POOL {
                        pool.push(client);
                    }
                }
                Err(self.failed(&e))
            }
        }
    }

    fn failed(&self, e: &postgres::Error) -> StoreError {
        let why = describe(e);
        self.errors.fetch_add(1, Ordering::Relaxed);
        if lock(&self.call_failed).replace(why.clone()).is_none() {
            warn!("state_store_call_failed", error = why);
        }
        StoreError(why)
    }

    /// Keeps a signed checkpoint of an audit log outside it: `verify --anchor`
    /// fails on a log that ends before the last one kept. Written by the
    /// listener (retried until it is stored; a newer one replaces it).
    pub fn anchor(&self, checkpoint: crate::audit::Checkpoint) {
        *lock(&self.unanchored) = Some(checkpoint);
    }

    fn store_anchor(&self, client: &mut Client) -> Result<(), postgres::Error> {
        let Some(c) = lock(&self.unanchored).clone() else {
            return Ok(());
        };
        client.execute(
            "INSERT INTO sluice_audit_checkpoints (log_key, instance, seq, hash, signature, at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &c.log_key,
                &self.name,
                &(c.anchor.seq as i64),
                &c.anchor.hash,
                &c.signature,
                &(c.at as i64),
            ],
        )?;
        let mut slot = lock(&self.unanchored);
        if slot.as_ref().is_some_and(|n| n.anchor.seq == c.anchor.seq) {
            *slot = None;
        }
        Ok(())
    }

    fn wake_local(&self, id: u64) {
        if let Some(senders) = lock(&self.watchers).remove(&id) {
            for s in senders {
                let _ = s.try_send(());
            }
        }
    }

    /// Wakes the sessions waiting on requests that are no longer pending (the
    /// safety net under lost notifications).
    fn poll_watched(&self, client: &mut Client) -> Result<(), postgres::Error> {
        let ids: Vec<i64> = {
            let mut w = lock(&self.watchers);
            w.retain(|_, senders| {
                senders.retain(|s| !s.is_disconnected());
                !senders.is_empty()
            });
            w.keys().map(|&id| id as i64).collect()
        };
        if ids.is_empty() {
            return Ok(());
        }
        for row in client.query(
            "SELECT id FROM sluice_approvals WHERE id = ANY($1) AND state <> 'pending'",
            &[&ids],
        )? {
            self.wake_local(row.get::<_, i64>(0) as u64);
        }
        Ok(())
    }

    /// Renews this instance's lease (by the database's clock, so instances'
    /// clocks need not agree).
    fn renew(&self, client: &mut Client) -> Result<(), postgres::Error> {
        let sent = crate::audit::now_ms() as i64;
        let row = client.query_one(
            &renew_sql("$4"),
            &[
                &self.instance,
                &self.name,
                &sent,
                &(self.lease.as_millis() as i64),
            ],
        )?;
        let db_now: i64 = row.get(0);
        let back = crate::audit::now_ms() as i64;
        // The database read its clock about halfway through the round trip.
        self.offset_ms
            .store(db_now - (sent + back) / 2, Ordering::Relaxed);
        *lock(&self.last_beat) = Some(Instant::now());
        Ok(())
    }
}

/// Registers (or renews) an instance's lease, by the database's clock, and
/// returns that clock; `$1` id, `$2` name, `$3` start time, `lease` the lease
/// in ms (a parameter, or a literal).
fn renew_sql(lease: &str) -> String {
    format!(
        "INSERT INTO sluice_instances (id, name, started_at, lease_until) \
         VALUES ($1, $2, $3, {DB_NOW} + {lease}) \
         ON CONFLICT (id) DO UPDATE SET lease_until = EXCLUDED.lease_until \
         RETURNING lease_until - {lease}"
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The listener: migrates the schema, renews the lease, and turns
/// notifications and polls into wake-ups; reconnects whenever the store goes.
fn listen(store: std::sync::Weak<PgStore>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(s) = store.upgrade() else { return };
        if s.stop.load(Ordering::Relaxed) {
            return;
        }
        let session = s
            .connector
            .connect()
            .map_err(|e| describe(&e))
            .and_then(|mut c| {
                migrate(&mut c)?;
                c.batch_execute(&format!("LISTEN {CHANNEL}"))
                    .map_err(|e| describe(&e))?;
                s.renew(&mut c).map_err(|e| describe(&e))?;
                Ok(c)
            });
        let mut client = match session {
            Ok(c) => c,
            Err(why) => {
                let was_up = lock(&s.listener_down).replace(why.clone()).is_none();
                *lock(&s.connected_since) = None;
                s.errors.fetch_add(1, Ordering::Relaxed);
                if was_up {
                    warn!("state_store_unreachable", error = why);
                }
                drop(s);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        if lock(&s.listener_down).take().is_some() {
            info!("state_store_connected", instance = s.instance);
        }
        *lock(&s.connected_since) = Some(Instant::now());
        drop(s);
        let lost = run_listener(&store, &mut client);
        let Some(s) = store.upgrade() else { return };
        if let Some(why) = lost {
            s.errors.fetch_add(1, Ordering::Relaxed);
            warn!("state_store_lost", error = why);
            *lock(&s.listener_down) = Some(why);
            *lock(&s.connected_since) = None;
            *lock(&s.last_beat) = None;
        }
    }
}

/// One connected stretch of the listener; returns why it ended (None: stopping).
fn run_listener(store: &std::sync::Weak<PgStore>, client: &mut Client) -> Option<String> {
    let mut ticks = 0u64;
    loop {
        let s = store.upgrade()?;
        if s.stop.load(Ordering::Relaxed) {
            return None;
        }
        // After every (re)connect and every second: what waits may have been
        // decided while a notification was lost.
        let beat = s
            .renew(client)
            .and_then(|()| s.poll_watched(client))
            .and_then(|()| s.store_anchor(client))
            .and_then(|()| match ticks % 60 {
                0 => forget_instances(client),
                _ => Ok(()),
            });
        if let Err(e) = beat {
            return Some(describe(&e));
        }
        ticks += 1;
        let until = Instant::now() + TICK;
        let mut notes = client.notifications();
        let mut iter = notes.timeout_iter(TICK);
        loop {
            match iter.next() {
                // A decision: its waiter (if here) wakes now.
                Ok(Some(n)) => {
                    if let Ok(id) = n.payload().parse::<u64>() {
                        s.wake_local(id);
                    }
                }
                Err(e) => return Some(describe(&e)),
                Ok(None) => break,
            }
            if Instant::now() >= until {
                break;
            }
        }
        drop(iter);
        drop(notes);
        if client.is_closed() {
            return Some("the connection closed".into());
        }
    }
}

/// Drops instances long gone that hold nothing pending.
fn forget_instances(client: &mut Client) -> Result<(), postgres::Error> {
    client.execute(
        &format!(
            "DELETE FROM sluice_instances i WHERE i.lease_until < {DB_NOW} - $1 \
             AND NOT EXISTS (SELECT 1 FROM sluice_approvals a \
                             WHERE a.instance = i.id AND a.state = 'pending')"
        ),
        &[&FORGET_AFTER_MS],
    )?;
    Ok(())
}

fn protocol(name: &str) -> &'static str {
    match name {
        "postgres" => "postgres",
        "http" => "http",
        "ssh" => "ssh",
        "mysql" => "mysql",
        "tcp" => "tcp",
        _ => "other",
    }
}

/// A row of `COLUMNS` as a request.
fn request(row: &Row) -> Request {
    let sha: Vec<u8> = row.get("sha256");
    let mut hash = [0u8; 32];
    if sha.len() == 32 {
        hash.copy_from_slice(&sha);
    }
    let voters: Vec<String> = row.get("voters");
    let voted_at: Vec<i64> = row.get("voted_at");
    let requester: String = row.get("requester");
    let target: String = row.get("target");
    let opt = |name: &str| row.get::<_, Option<i64>>(name).map(|v| v as u64);
    let approvers: Vec<String> = row.get("approvers");
    Request {
        id: row.get::<_, i64>("id") as u64,
        // A state a newer gateway wrote is closed for this one.
        state: State::parse(row.get("state")).unwrap_or(State::Cancelled),
        instance: row.get("instance"),
        key: Some(Key {
            requester: requester.clone(),
            target: target.clone(),
            hash,
        }),
        requester,
        target,
        protocol: protocol(row.get("protocol")),
        summary: row.get("summary"),
        statement: row.get("statement"),
        statement_sha256: hash,
        params: row.get("params"),
        database: row.get("database"),
        session: row.get("session"),
        justification: row.get("justification"),
        approvers: approvers.into(),
        quorum: row.get::<_, i32>("quorum").clamp(0, 255) as u8,
        approvals: voters
            .into_iter()
            .zip(voted_at)
            .map(|(subject, at)| Vote {
                subject,
                at: at as u64,
            })
            .collect(),
        denied_by: row.get("denied_by"),
        reason: row.get("reason"),
        created_at: row.get::<_, i64>("created_at") as u64,
        expires_at: row.get::<_, i64>("expires_at") as u64,
        decided_at: opt("decided_at"),
        grant_until: opt("grant_until"),
        used: row.get("used"),
        grant_ttl_ms: row.get::<_, i64>("grant_ttl_ms") as u64,
    }
}

fn notify(tx: &mut postgres::Transaction<'_>, id: u64) -> Result<(), postgres::Error> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id.to_string()])?;
    Ok(())
}

impl ApprovalStore for PgStore {
    fn open(
        &self,
        new: NewRequest,
        now: u64,
        max_pending: usize,
    ) -> Result<(Request, bool), OpenError> {
        let now = self.db_now(now);
        let opened = self.with(|c| {
            let mut tx = c.transaction()?;
            let key = &new.key;
            if new.reuse {
                let found = tx.query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM sluice_approvals a WHERE a.state = 'pending' \
                         AND a.expires_at > $1 AND a.requester = $2 AND a.target = $3 \
                         AND a.sha256 = $4 ORDER BY a.id DESC LIMIT 1"
                    ),
                    &[&now, &key.requester, &key.target, &&key.hash[..]],
                )?;
                if let Some(row) = found {
                    tx.commit()?;
                    return Ok(Ok((request(&row), false)));
                }
            }
            // The request is this instance's: its lease is renewed with it,
            // so no other instance takes it for a dead one's.
            tx.query_one(
                &renew_sql("$4"),
                &[
                    &self.instance,
                    &self.name,
                    &now,
                    &(self.lease.as_millis() as i64),
                ],
            )?;
            let counts = tx.query_one(
                "SELECT count(*), count(*) FILTER (WHERE requester = $1) \
                 FROM sluice_approvals WHERE state = 'pending'",
                &[&key.requester],
            )?;
            let (all, mine): (i64, i64) = (counts.get(0), counts.get(1));
            if all as usize >= max_pending {
                return Ok(Err(OpenError::TooMany(all as usize)));
            }
            if mine as usize >= MAX_PENDING_PER_REQUESTER {
                return Ok(Err(OpenError::TooManyFor(
                    key.requester.clone(),
                    mine as usize,
                )));
            }
            let approvers: Vec<&str> = new.approvers.iter().map(String::as_str).collect();
            let row = tx.query_one(
                &format!(
                    "INSERT INTO sluice_approvals AS a (state, instance, requester, target, \
                     protocol, summary, statement, sha256, params, database, session, approvers, \
                     quorum, created_at, expires_at, grant_ttl_ms, justification) VALUES ('pending', \
                     $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                     RETURNING {COLUMNS}"
                ),
                &[
                    &self.instance,
                    &key.requester,
                    &key.target,
                    &new.protocol,
                    &new.summary,
                    &new.text,
                    &&key.hash[..],
                    &new.params,
                    &new.database,
                    &new.session,
                    &approvers,
                    &(new.quorum as i32),
                    &now,
                    &(now + new.ttl_ms as i64),
                    &(new.grant_ttl_ms as i64),
                    &new.justification,
                ],
            )?;
            tx.commit()?;
            Ok(Ok((request(&row), true)))
        });
        opened.unwrap_or_else(|e| Err(e.into()))
    }

    fn get(&self, id: u64, _now: u64) -> Result<Option<Request>, StoreError> {
        let row = self.with(|c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM sluice_approvals a WHERE a.id = $1"),
                &[&(id as i64)],
            )
        })?;
        Ok(row.as_ref().map(request))
    }

    fn list(&self, state: Option<State>, _now: u64) -> Result<Vec<Request>, StoreError> {
        let rows = self.with(|c| match state {
            Some(st) => c.query(
                &format!(
                    "SELECT {COLUMNS} FROM sluice_approvals a WHERE a.state = $1 \
                     ORDER BY a.id DESC LIMIT $2"
                ),
                &[&st.as_str(), &LIST_LIMIT],
            ),
            None => c.query(
                &format!("SELECT {COLUMNS} FROM sluice_approvals a ORDER BY a.id DESC LIMIT $1"),
                &[&LIST_LIMIT],
            ),
        })?;
        Ok(rows.iter().map(request).collect())
    }

    fn vote(
        &self,
        id: u64,
        voter: &Voter,
        decision: Decision,
        reason: Option<String>,
        now: u64,
    ) -> Result<Voted, VoteError> {
        let now = self.db_now(now);
        let voted = self.with(|c| {
            let mut tx = c.transaction()?;
            let id64 = id as i64;
            // The row lock orders votes on one request across every instance.
            let Some(row) = tx.query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM sluice_approvals a WHERE a.id = $1 FOR UPDATE OF a"
                ),
                &[&id64],
            )?
            else {
                return Ok(Err(VoteError::NotFound(id)));
            };
            let r = request(&row);
            if let Err(refused) = super::store::may_vote(&r, voter) {
                return Ok(Err(refused));
            }
            if now as u64 >= r.expires_at {
                // The sweep marks (and reports) it expired.
                return Ok(Err(VoteError::Closed {
                    id,
                    state: State::Expired.as_str(),
                }));
            }
            let select = format!("SELECT {COLUMNS} FROM sluice_approvals a WHERE a.id = $1");
            let (counted, decided) = match decision {
                Decision::Deny => {
                    tx.execute(
                        "UPDATE sluice_approvals SET state = 'denied', denied_by = $2, \
                         reason = $3, decided_at = $4 WHERE id = $1 AND state = 'pending'",
                        &[&id64, &voter.subject, &reason, &now],
                    )?;
                    (true, true)
                }
                Decision::Approve => {
                    let counted = tx.execute(
                        "INSERT INTO sluice_approval_votes (approval, subject, at) \
                         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        &[&id64, &voter.subject, &now],
                    )? == 1;
                    if counted && reason.is_some() {
                        tx.execute(
                            "UPDATE sluice_approvals SET reason = $2 WHERE id = $1",
                            &[&id64, &reason],
                        )?;
                    }
                    let votes: i64 = tx
                        .query_one(
                            "SELECT count(*) FROM sluice_approval_votes WHERE approval = $1",
                            &[&id64],
                        )?
                        .get(0);
                    let decided = votes >= r.quorum as i64;
                    if decided {
                        tx.execute(
                            "UPDATE sluice_approvals SET state = 'approved', decided_at = $2, \
                             grant_until = $2 + grant_ttl_ms WHERE id = $1 AND state = 'pending'",
                            &[&id64, &now],
                        )?;
                    }
                    (counted, decided)
                }
            };
            if decided {
                notify(&mut tx, id)?;
            }
            let row = tx.query_one(&select, &[&id64])?;
            tx.commit()?;
            Ok(Ok(Voted {
                request: request(&row),
                counted,
                decided,
            }))
        });
        voted.unwrap_or_else(|e| Err(e.into()))
    }

    fn cancel(&self, id: u64, now: u64) -> Result<Option<Request>, StoreError> {
        let now = self.db_now(now);
        let row = self.with(|c| {
            c.query_opt(
                &format!(
                    "UPDATE sluice_approvals AS a SET state = 'cancelled', decided_at = $2 \
                     WHERE a.id = $1 AND a.state = 'pending' RETURNING {COLUMNS}"
                ),
                &[&(id as i64), &now],
            )
        })?;
        Ok(row.as_ref().map(request))
    }

    fn consume(&self, id: u64, now: u64) -> Result<Option<Request>, StoreError> {
        let now = self.db_now(now);
        let row = self.with(|c| {
            c.query_opt(
                &format!(
                    "UPDATE sluice_approvals AS a SET used = true WHERE a.id = $1 \
                     AND a.state = 'approved' AND NOT a.used AND a.grant_until > $2 \
                     RETURNING {COLUMNS}"
                ),
                &[&(id as i64), &now],
            )
        })?;
        Ok(row.as_ref().map(request))
    }

    fn take_grant(&self, key: &Key, now: u64) -> Result<Option<Request>, StoreError> {
        let now = self.db_now(now);
        // The oldest usable grant, locked; a concurrent taker skips it (and
        // finds the next, or none): one grant runs one statement.
        let row = self.with(|c| {
            c.query_opt(
                &format!(
                    "UPDATE sluice_approvals AS a SET used = true WHERE a.id = (\
                       SELECT id FROM sluice_approvals WHERE state = 'approved' AND NOT used \
                       AND grant_until > $1 AND requester = $2 AND target = $3 AND sha256 = $4 \
                       ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     AND NOT a.used RETURNING {COLUMNS}"
                ),
                &[&now, &key.requester, &key.target, &&key.hash[..]],
            )
        })?;
        Ok(row.as_ref().map(request))
    }

    fn expire(&self, now: u64) -> Result<Vec<Request>, StoreError> {
        let now = self.db_now(now);
        // Judge others dead only after a whole lease of being connected
        // ourselves: after an outage of the store, every live instance gets
        // the time to renew its lease first.
        let judge = lock(&self.connected_since).is_some_and(|since| since.elapsed() >= self.lease);
        self.with(|c| {
            let mut tx = c.transaction()?;
            let mut closed: Vec<Request> = tx
                .query(
                    &format!(
                        "UPDATE sluice_approvals AS a SET state = 'expired', decided_at = $1 \
                         WHERE a.state = 'pending' AND a.expires_at <= $1 RETURNING {COLUMNS}"
                    ),
                    &[&now],
                )?
                .iter()
                .map(request)
                .collect();
            if judge {
                let abandoned = tx.query(
                    &format!(
                        "UPDATE sluice_approvals AS a SET state = 'abandoned', decided_at = $1 \
                         WHERE a.state = 'pending' AND a.instance <> $2 AND a.instance IN (\
                           SELECT id FROM sluice_instances \
                           WHERE lease_until < (extract(epoch FROM clock_timestamp()) * 1000)::bigint) \
                         RETURNING {COLUMNS}"
                    ),
                    &[&now, &self.instance],
                )?;
                closed.extend(abandoned.iter().map(request));
            }
            for r in &closed {
                notify(&mut tx, r.id)?;
            }
            tx.commit()?;
            Ok(closed)
        })
    }

    fn watch(&self, id: u64) -> flume::Receiver<()> {
        let (tx, rx) = flume::bounded(1);
        lock(&self.watchers).entry(id).or_default().push(tx);
        rx
    }

    fn wake(&self, id: u64) {
        // Other instances hear of it through the notification the vote sent.
        self.wake_local(id);
    }

    fn health(&self) -> Option<String> {
        self.unavailable()
            .or_else(|| lock(&self.call_failed).clone())
    }

    fn remote(&self) -> bool {
        true
    }

    fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
