//! One client connection: the token login, then each session channel judged
//! and relayed to its own channel on Sluice's connection to the upstream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, ChannelWriteHalf, MethodKind, MethodSet};
use sluice_config::policy::Decision;
use sluice_config::Action;

use super::recording::Recording;
use super::upstream::{self, Upstream};
use super::Endpoint;
use crate::approvals::{self, Key, Opened, Settled};
use crate::audit::{now_ms, Rec};
use crate::identity::Identity;
use crate::{info, warn};

/// The exit status of a command Sluice refused (as a shell's "cannot execute").
const REFUSED: u32 = 126;
/// The exit status when Sluice could not run the command at all.
const FAILED: u32 = 255;
/// How long the upstream may take to answer Sluice's login.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn server_config(key: PrivateKey) -> server::Config {
    server::Config {
        keys: vec![key],
        methods: logins(),
        auth_rejection_time: Duration::from_millis(300),
        // OpenSSH's first `none` probe is not a failed attempt.
        auth_rejection_time_initial: Some(Duration::ZERO),
        // Idle shells stay; dead peers are found by keepalives.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        ..Default::default()
    }
}

fn logins() -> MethodSet {
    MethodSet::from(&[MethodKind::Password, MethodKind::KeyboardInteractive][..])
}

/// A refused login that may be tried again (a plain reject would take the
/// method off the list, and OpenSSH would stop asking).
fn try_again() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(logins()),
        partial_success: false,
    }
}

#[derive(Clone, Default)]
struct Pty {
    term: String,
    cols: u32,
    rows: u32,
    modes: Vec<(russh::Pty, u32)>,
}

/// What a channel's relay task needs to know of its connection.
#[derive(Clone)]
struct Caller {
    endpoint: Arc<Endpoint>,
    target: String,
    session: String,
    identity: Arc<Identity>,
    fd: RawFd,
    upstream: Arc<tokio::sync::Mutex<Option<Arc<Upstream>>>>,
}

pub(super) struct Connection {
    endpoint: Arc<Endpoint>,
    target: String,
    peer: SocketAddr,
    fd: RawFd,
    session: String,
    identity: Option<Arc<Identity>>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    ptys: HashMap<ChannelId, Pty>,
    /// Sluice's login to the upstream, made once for the connection's channels.
    upstream: Arc<tokio::sync::Mutex<Option<Arc<Upstream>>>>,
    counter: u32,
}

impl Connection {
    pub fn new(
        endpoint: Arc<Endpoint>,
        target: String,
        peer: SocketAddr,
        stream: &tokio::net::TcpStream,
    ) -> Connection {
        let mut sid = [0u8; 8];
        getrandom::fill(&mut sid).expect("the OS random source is available");
        Connection {
            endpoint,
            target,
            peer,
            fd: stream.as_raw_fd(),
            session: sid.iter().map(|b| format!("{b:02x}")).collect(),
            identity: None,
            channels: HashMap::new(),
            ptys: HashMap::new(),
            upstream: Arc::default(),
            counter: 0,
        }
    }

    fn note(&self, build: impl FnOnce(&mut Vec<u8>)) {
        if let Some(audit) = &self.endpoint.shared.audit {
            let mut body = Vec::with_capacity(256);
            build(&mut body);
            audit.side_record(body);
        }
    }

    /// Checks the token (the SSH password) and the target's `access`.
    async fn login(&mut self, token: &str) -> Auth {
        let endpoint = self.endpoint.clone();
        let (Some(verifier), Some(keys)) = (&endpoint.verifier, &endpoint.shared.keys) else {
            return try_again();
        };
        let now = crate::identity::unix_now();
        let verified =
            crate::identity::verify_fresh(verifier, keys, token.trim(), now, tokio::time::sleep)
                .await;
        let peer = super::peer_text(self.peer);
        let identity = match verified {
            Ok(id) => id,
            Err(e) => {
                info!("auth_failed", target = self.target, peer = peer, reason = e);
                self.note(|out| {
                    Rec::begin(out, "auth_failure", now_ms())
                        .str("target", &self.target)
                        .str("protocol", "ssh")
                        .str("client", &peer)
                        .str("reason", &e.to_string())
                        .end()
                });
                return try_again();
            }
        };
        let generation = endpoint.current.load();
        let policy = &generation.policy;
        let allowed = policy
            .target_index(&self.target)
            .is_some_and(|t| policy.may_connect(t, policy.groups(&identity.groups)));
        if !allowed {
            warn!(
                "access_denied",
                target = self.target,
                subject = identity.subject,
                peer = peer
            );
            self.note(|out| {
                Rec::begin(out, "access_denied", now_ms())
                    .str("target", &self.target)
                    .str("protocol", "ssh")
                    .str("client", &peer)
                    .str("subject", &identity.subject)
                    .strs("groups", &identity.groups)
                    .end()
            });
            return try_again();
        }
        info!(
            "session_start",
            target = self.target,
            subject = identity.subject,
            peer = peer
        );
        self.note(|out| {
            Rec::begin(out, "session_start", now_ms())
                .str("session", &self.session)
                .str("target", &self.target)
                .str("protocol", "ssh")
                .str("subject", &identity.subject)
                .strs("groups", &identity.groups)
                .str("client", &peer)
                .end()
        });
        self.identity = Some(Arc::new(identity));
        Auth::Accept
    }

    fn caller(&self) -> Option<Caller> {
        Some(Caller {
            endpoint: self.endpoint.clone(),
            target: self.target.clone(),
            session: self.session.clone(),
            identity: self.identity.clone()?,
            fd: self.fd,
            upstream: self.upstream.clone(),
        })
    }

    /// A refusal of something the client asked for besides commands.
    fn refused(&self, what: &str) {
        let subject = self.identity.as_ref().map_or("", |i| i.subject.as_str());
        info!(
            "ssh_refused",
            target = self.target,
            subject = subject,
            what = what
        );
        self.note(|out| {
            Rec::begin(out, "command", now_ms())
                .str("session", &self.session)
                .str("target", &self.target)
                .str("subject", subject)
                .str("protocol", "ssh")
                .str("request", what)
                .str("decision", "deny")
                .end()
        });
    }

    fn ssh_rules(&self) -> sluice_config::SshRules {
        let generation = self.endpoint.current.load();
        generation
            .policy
            .target_index(&self.target)
            .map(|t| generation.policy.targets[t].ssh)
            .unwrap_or(sluice_config::SshRules {
                shell: Action::Deny,
                sftp: Action::Deny,
                ..Default::default()
            })
    }

    /// Starts a channel's relay task, which owns the client's channel from now on.
    fn spawn(&mut self, id: ChannelId, what: Work) -> bool {
        let (Some(channel), Some(caller)) = (self.channels.remove(&id), self.caller()) else {
            return false;
        };
        self.counter += 1;
        let pty = self.ptys.remove(&id);
        let name = format!("{}-{}", self.session, self.counter);
        tokio::spawn(run(caller, channel, what, pty, name));
        true
    }
}

/// What a channel runs.
enum Work {
    Exec(String),
    Shell,
    Sftp,
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, _user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self.login(password).await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let Some(mut response) = response else {
            return Ok(Auth::Partial {
                name: "Sluice".into(),
                instructions: "Log in with your access token.".into(),
                prompts: vec![("Access token: ".into(), false)].into(),
            });
        };
        let token = response
            .next()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Ok(self.login(&token).await)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator: &str,
        _originator_port: u32,
        _reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Dropping the reply refuses the channel (administratively prohibited).
        if self.ssh_rules().port_forwarding != Action::Allow {
            self.refused(&format!("port forwarding to {host}:{port}"));
        } else {
            self.refused(&format!(
                "port forwarding to {host}:{port} (not relayed by this version)"
            ));
        }
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refused(&format!("remote port forwarding from {address}:{port}"));
        Ok(false)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refused("agent forwarding");
        Ok(false)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refused("X11 forwarding");
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The caller's environment is not passed to the host.
        session.channel_failure(channel)
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.ptys.insert(
            channel,
            Pty {
                term: term.to_owned(),
                cols,
                rows,
                modes: modes.to_vec(),
            },
        );
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let line = String::from_utf8_lossy(data).into_owned();
        // Success first: the decision is told on the channel (stderr and an
        // exit status), which every client shows.
        session.channel_success(channel)?;
        if !self.spawn(channel, Work::Exec(line)) {
            session.close(channel)?;
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        if !self.spawn(channel, Work::Shell) {
            session.close(channel)?;
        }
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name != "sftp" || self.ssh_rules().sftp != Action::Allow {
            self.refused(&format!("subsystem {name}"));
            return session.channel_failure(channel);
        }
        session.channel_success(channel)?;
        if !self.spawn(channel, Work::Sftp) {
            session.close(channel)?;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        self.ptys.remove(&channel);
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(identity) = &self.identity {
            self.note(|out| {
                Rec::begin(out, "session_end", now_ms())
                    .str("session", &self.session)
                    .str("target", &self.target)
                    .str("subject", &identity.subject)
                    .end()
            });
        }
    }
}

/// Tells the client why on stderr and ends the channel with `status`.
async fn finish(tx: &ChannelWriteHalf<Msg>, message: &str, status: u32) {
    let _ = tx
        .extended_data_bytes(1, format!("sluice: {message}\r\n").into_bytes())
        .await;
    let _ = tx.exit_status(status).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

/// What the rules say of a channel's work, and the approval it needs.
enum Verdict {
    Allow,
    Deny(String),
    Approve(Arc<sluice_config::policy::ApprovalSpec>),
}

fn judge(caller: &Caller, work: &Work) -> Verdict {
    let generation = caller.endpoint.current.load();
    let policy = &generation.policy;
    let Some(t) = policy.target_index(&caller.target) else {
        return Verdict::Deny("the target is no longer configured".into());
    };
    let groups = policy.groups(&caller.identity.groups);
    if !policy.may_connect(t, groups) {
        return Verdict::Deny(format!(
            "access to target `{}` was withdrawn",
            caller.target
        ));
    }
    let decision = match work {
        Work::Exec(line) => policy.decide_command(t, line, groups),
        Work::Sftp => Decision::Allow,
        Work::Shell => match policy.targets[t].ssh.shell {
            Action::Allow => Decision::Allow,
            Action::Deny => {
                return Verdict::Deny(format!(
                    "interactive shells are not allowed on target `{}`; run commands with `ssh HOST COMMAND`",
                    caller.target
                ))
            }
            Action::Approve => Decision::Approve { rule: u16::MAX },
        },
    };
    match decision {
        Decision::Allow => Verdict::Allow,
        Decision::Deny { message, .. } => Verdict::Deny(message.to_string()),
        Decision::Approve { rule } => {
            let spec = if rule == u16::MAX {
                // A shell held for approval: the target's approvers.
                let target = generation
                    .config
                    .targets
                    .iter()
                    .find(|x| x.name == caller.target);
                target.map(|x| {
                    Arc::new(sluice_config::policy::ApprovalSpec {
                        approvers: x.approvers.iter().cloned().collect(),
                        quorum: x.quorum,
                        mode: x.approval_mode,
                        timeout: x
                            .approval_timeout
                            .unwrap_or(generation.config.approvals.timeout),
                        grant_ttl: generation.config.approvals.grant_ttl,
                    })
                })
            } else {
                policy.approval(t, rule).cloned()
            };
            match spec {
                Some(s) if !s.approvers.is_empty() => Verdict::Approve(s),
                _ => Verdict::Deny("this needs approval, and nobody may approve it".into()),
            }
        }
    }
}

/// A held command: the approval flow, told on stderr. `Ok(id)` once approved.
async fn hold(
    caller: &Caller,
    tx: &ChannelWriteHalf<Msg>,
    spec: Arc<sluice_config::policy::ApprovalSpec>,
    text: &str,
) -> Result<u64, String> {
    let approvals = &caller.endpoint.shared.approvals;
    let fields: [(&[u8], &[u8]); 1] = [(b"command", text.as_bytes())];
    let held = approvals::Hold {
        key: Key {
            requester: caller.identity.subject.clone(),
            target: caller.target.clone(),
            hash: approvals::key_hash(&fields, &spec),
        },
        spec: spec.clone(),
        protocol: "ssh",
        what: format!("`{text}` on {}", caller.target),
        summary: text.split_whitespace().next().unwrap_or("shell").to_owned(),
        text: text.to_owned(),
        params: Vec::new(),
        database: String::new(),
        session: caller.session.clone(),
    };
    let pending = match approvals.hold(held) {
        Opened::Granted(id) => return Ok(id),
        Opened::Failed(message) => return Err(message),
        Opened::Later { id, approvers, .. } => {
            return Err(format!(
                "approval {id} requested for `{text}`; run the same command again once it is approved (an approver in {} runs: sluice approvals approve {id})",
                approvers.join(", ")
            ))
        }
        Opened::Waiting(p) => p,
    };
    let _ = tx
        .extended_data_bytes(
            1,
            format!(
                "sluice: approval {} requested for `{text}`; waiting up to {}s\r\n",
                pending.id,
                pending.timeout.as_secs()
            )
            .into_bytes(),
        )
        .await;
    let endpoint = caller.endpoint.clone();
    let waiting = approvals::Waiting {
        stopping: move || endpoint.stopping.load(Ordering::Acquire),
        cancelled: || false,
        sleep: tokio::time::sleep,
    };
    let settled = pending.wait(caller.fd, waiting).await;
    let message = settled.message();
    match settled {
        Settled::Approved(id) => Ok(id),
        Settled::Gone => Err("the client went away".into()),
        Settled::Refused { .. } => Err(message),
    }
}

/// Records a command decision; in strict durability waits until it is on disk.
/// `false`: it could not be recorded, so it must not run.
async fn record(
    caller: &Caller,
    what: &Work,
    decision: &str,
    approval: Option<u64>,
    reason: Option<&str>,
) -> bool {
    let Some(audit) = &caller.endpoint.shared.audit else {
        return true;
    };
    let mut body = Vec::with_capacity(256);
    let mut rec = Rec::begin(&mut body, "command", now_ms())
        .str("session", &caller.session)
        .str("target", &caller.target)
        .str("subject", &caller.identity.subject)
        .str("protocol", "ssh");
    rec = match what {
        Work::Exec(line) => rec.str("request", "exec").text("text", line.as_bytes()),
        Work::Shell => rec.str("request", "shell"),
        Work::Sftp => rec.str("request", "sftp"),
    };
    rec = rec.str("decision", decision);
    if let Some(id) = approval {
        rec = rec.num("approval", id);
    }
    match reason {
        Some(r) => rec.str("reason", r).end(),
        None => rec.end(),
    }
    let ran = decision == "allow";
    if !(ran && audit.strict()) {
        audit.side_record(body);
        return true;
    }
    match audit.record_durable(body) {
        Ok(durable) => matches!(
            tokio::time::timeout(Duration::from_secs(5), durable.recv_async()).await,
            Ok(Ok(()))
        ),
        Err(_) => false,
    }
}

/// One channel, from the decision to its close.
async fn run(caller: Caller, channel: Channel<Msg>, work: Work, pty: Option<Pty>, name: String) {
    let (rx, tx) = channel.split();
    let text = match &work {
        Work::Exec(line) => line.clone(),
        Work::Shell => "(interactive shell)".into(),
        Work::Sftp => "(sftp)".into(),
    };
    let mut approval = None;
    match judge(&caller, &work) {
        Verdict::Deny(message) => {
            info!(
                "ssh_denied",
                target = caller.target,
                subject = caller.identity.subject,
                command = text
            );
            record(&caller, &work, "deny", None, Some(&message)).await;
            return finish(&tx, &message, REFUSED).await;
        }
        Verdict::Approve(spec) => match hold(&caller, &tx, spec, &text).await {
            Ok(id) => approval = Some(id),
            Err(message) => {
                record(&caller, &work, "deny", None, Some(&message)).await;
                return finish(&tx, &message, REFUSED).await;
            }
        },
        Verdict::Allow => {}
    }
    if !record(&caller, &work, "allow", approval, None).await {
        return finish(
            &tx,
            "refused: the audit log cannot record it; Sluice runs nothing it cannot record",
            REFUSED,
        )
        .await;
    }
    let upstream = match connected(&caller).await {
        Ok(u) => u,
        Err(e) => {
            warn!("upstream_connect_failed", target = caller.target, error = e);
            return finish(
                &tx,
                &format!("target `{}` is unavailable", caller.target),
                FAILED,
            )
            .await;
        }
    };
    let upch = match upstream.channel_open_session().await {
        Ok(c) => c,
        Err(e) => {
            // The connection may have gone stale: one fresh login.
            *caller.upstream.lock().await = None;
            warn!("upstream_channel_failed", target = caller.target, error = e);
            return finish(
                &tx,
                &format!("target `{}` is unavailable", caller.target),
                FAILED,
            )
            .await;
        }
    };
    let mut recording = None;
    if let Some(dir) = &caller.endpoint.recordings {
        let (cols, rows) = pty.as_ref().map_or((80, 24), |p| (p.cols, p.rows));
        match Recording::create(
            dir,
            &name,
            cols,
            rows,
            &format!("{} on {}: {text}", caller.identity.subject, caller.target),
        ) {
            Ok(r) => recording = Some(r),
            Err(e) => {
                warn!("recording_failed", target = caller.target, error = e);
                return finish(&tx, "refused: the session cannot be recorded", REFUSED).await;
            }
        }
    }
    let started = match &work {
        Work::Exec(line) => {
            if let Some(p) = &pty {
                let _ = upch
                    .request_pty(false, &p.term, p.cols, p.rows, 0, 0, &p.modes)
                    .await;
            }
            upch.exec(true, line.as_bytes()).await
        }
        Work::Shell => {
            let p = pty.clone().unwrap_or_default();
            if pty.is_some() {
                let _ = upch
                    .request_pty(false, &p.term, p.cols, p.rows, 0, 0, &p.modes)
                    .await;
            }
            upch.request_shell(true).await
        }
        Work::Sftp => upch.request_subsystem(true, "sftp").await,
    };
    if let Err(e) = started {
        warn!("upstream_request_failed", target = caller.target, error = e);
        return finish(
            &tx,
            &format!("target `{}` refused the request", caller.target),
            FAILED,
        )
        .await;
    }
    let recording = Arc::new(Mutex::new(recording));
    if let Ok(mut r) = recording.lock() {
        if let (Some(r), Some(id)) = (r.as_mut(), approval) {
            r.event("m", format!("approved by request {id}").as_bytes());
        }
    }
    // Text streams are recorded; sftp is a binary protocol: counted only.
    let text_stream = !matches!(work, Work::Sftp);
    relay(rx, tx, upch, recording.clone(), text_stream).await;
    let sealed = recording
        .lock()
        .ok()
        .and_then(|mut r| r.take())
        .map(Recording::seal);
    match sealed {
        Some(Ok(s)) => {
            if let Some(audit) = &caller.endpoint.shared.audit {
                let mut body = Vec::with_capacity(256);
                Rec::begin(&mut body, "recording", now_ms())
                    .str("session", &caller.session)
                    .str("target", &caller.target)
                    .str("subject", &caller.identity.subject)
                    .str("file", &s.path.display().to_string())
                    .num("bytes", s.bytes)
                    .str("sha256", &s.sha256)
                    .end();
                audit.side_record(body);
            }
        }
        Some(Err(e)) => warn!("recording_failed", target = caller.target, error = e),
        None => {}
    }
}

/// Sluice's upstream connection for this client connection (logged in once).
async fn connected(caller: &Caller) -> Result<Arc<Upstream>, String> {
    let mut slot = caller.upstream.lock().await;
    if let Some(u) = slot.as_ref() {
        if !u.is_closed() {
            return Ok(u.clone());
        }
    }
    let generation = caller.endpoint.current.load();
    let target = generation
        .config
        .targets
        .iter()
        .find(|t| t.name == caller.target)
        .ok_or("the target is no longer configured")?;
    let u = Arc::new(upstream::connect(target, CONNECT_TIMEOUT).await?);
    *slot = Some(u.clone());
    Ok(u)
}

/// Both directions of one channel until the upstream closes it.
async fn relay(
    mut rx: russh::ChannelReadHalf,
    tx: ChannelWriteHalf<Msg>,
    upch: Channel<russh::client::Msg>,
    recording: Arc<Mutex<Option<Recording>>>,
    text: bool,
) {
    let (mut up_rx, up_tx) = upch.split();
    let record = move |kind: &str, data: &[u8]| {
        if let Ok(mut r) = recording.lock() {
            if let Some(r) = r.as_mut() {
                r.event(kind, data);
            }
        }
    };
    let record_in = record.clone();
    let to_upstream = tokio::spawn(async move {
        while let Some(msg) = rx.wait().await {
            let sent = match msg {
                ChannelMsg::Data { data } => {
                    if text {
                        record_in("i", &data);
                    }
                    up_tx.data_bytes(data).await
                }
                ChannelMsg::Eof => up_tx.eof().await,
                ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                } => {
                    record_in("r", format!("{col_width}x{row_height}").as_bytes());
                    up_tx
                        .window_change(col_width, row_height, pix_width, pix_height)
                        .await
                }
                ChannelMsg::Signal { signal } => up_tx.signal(signal).await,
                ChannelMsg::Close => break,
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = up_tx.close().await;
    });
    let mut eof = false;
    while let Some(msg) = up_rx.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                if text {
                    record("o", &data);
                }
                tx.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                if text {
                    record("o", &data);
                }
                tx.extended_data_bytes(ext, data).await
            }
            ChannelMsg::ExitStatus { exit_status } => tx.exit_status(exit_status).await,
            ChannelMsg::Eof => {
                eof = true;
                tx.eof().await
            }
            ChannelMsg::Close => break,
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    if !eof {
        let _ = tx.eof().await;
    }
    let _ = tx.close().await;
    to_upstream.abort();
}
