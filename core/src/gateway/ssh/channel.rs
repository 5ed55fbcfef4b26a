//! One channel's life: the rules' decision (and an approval), the audit
//! record, Sluice's channel on the upstream connection, both directions
//! relayed and recorded, the recording sealed into the hash chain.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelWriteHalf};
use sluice_config::policy::Decision;
use sluice_config::Action;
use sluice_masking::{Profile, StreamMasker};

use super::recording::Recording;
use super::screen::{Line, Screen};
use super::session::{Caller, Pty, Work};
use super::upstream::{self, Upstream};
use crate::approvals::{self, Key, Opened, Settled};
use crate::audit::event::{self, Command, Observed, Via};
use crate::audit::Event as _;
use crate::{info, warn};

/// The exit status of a command Sluice refused (as a shell's "cannot execute").
const REFUSED: u32 = 126;
/// The exit status when Sluice could not run the command at all.
const FAILED: u32 = 255;
/// How long the upstream may take to answer Sluice's login.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Programs that serve file transfer over an `exec` (judged as `sftp`).
const TRANSFER_PROGRAMS: &[&str] = &["sftp-server", "internal-sftp", "scp", "rsync"];

/// `interactive`: the channel has a terminal (`ssh -t`): a command there may
/// be a shell in all but name (`sudo -i`, `su`, `tmux`), so the `shell` rule
/// applies to it too, and the stricter decision holds.
fn judge(caller: &Caller, work: &Work, interactive: bool) -> Verdict {
    let generation = caller.endpoint.current.load();
    let policy = &generation.policy;
    let t = match still_allowed(caller, policy) {
        Ok(t) => t,
        Err(message) => return Verdict::Deny(message),
    };
    let groups = policy.groups(&caller.identity.groups);
    let rules = policy.targets[t].ssh;
    if let Work::Exec(line) = work {
        let transfers = sluice_protocols::shell::simple_commands(line).is_ok_and(|c| {
            c.iter().any(|c| {
                let program = c.split(' ').next().unwrap_or_default();
                TRANSFER_PROGRAMS.contains(&program)
            })
        });
        if transfers && rules.sftp != Action::Allow {
            return Verdict::Deny(format!(
                "file transfer (sftp, scp) is not allowed on target `{}`",
                caller.target
            ));
        }
        if interactive && rules.shell != Action::Allow {
            // Judged as a shell first; a held shell still meets the command rules.
            match judge(caller, &Work::Shell, false) {
                Verdict::Allow => {}
                Verdict::Deny(_) => {
                    return Verdict::Deny(format!(
                        "commands with a terminal (ssh -t) count as interactive shells, which are not allowed on target `{}`; run it without -t",
                        caller.target
                    ))
                }
                Verdict::Approve(shell) => {
                    return match judge(caller, work, false) {
                        Verdict::Deny(m) => Verdict::Deny(m),
                        // Held twice by different approvers: one approval
                        // cannot stand for both.
                        Verdict::Approve(own) if own != shell => Verdict::Deny(format!(
                            "with a terminal (ssh -t) this command needs two different approvals (as a shell on target `{}`, and for itself); run it without -t",
                            caller.target
                        )),
                        _ => Verdict::Approve(shell),
                    };
                }
            }
        }
    }
    let decision = match work {
        Work::Exec(line) => policy.decide_command(t, line, groups),
        Work::Sftp => Decision::Allow,
        Work::Shell => match rules.shell {
            Action::Allow => Decision::Allow,
            Action::Deny => {
                return Verdict::Deny(format!(
                    "interactive shells are not allowed on target `{}`; run commands with `ssh HOST COMMAND`",
                    caller.target
                ))
            }
            Action::Approve => Decision::Approve {
                rule: sluice_config::policy::OTHER_COMMANDS,
            },
        },
    };
    match decision {
        Decision::Allow => Verdict::Allow,
        Decision::Deny { message, .. } => Verdict::Deny(message.to_string()),
        Decision::Approve { rule } => {
            let spec = if rule == sluice_config::policy::OTHER_COMMANDS {
                // A shell, or a command no rule names, held for approval:
                // the target's approvers.
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
                        reason: false,
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

/// The checks every channel meets before its rules: the target is still
/// configured, the caller may still reach it, the login has not expired.
/// `Ok` is the target's index in `policy`.
fn still_allowed(
    caller: &Caller,
    policy: &sluice_config::policy::CompiledPolicy,
) -> Result<usize, String> {
    let Some(t) = policy.target_index(&caller.target) else {
        return Err("the target is no longer configured".into());
    };
    if !policy.may_connect(t, policy.groups(&caller.identity.groups)) {
        return Err(format!(
            "access to target `{}` was withdrawn",
            caller.target
        ));
    }
    if caller.identity.expires_at <= crate::identity::unix_now() {
        return Err("your access token has expired; log in again".into());
    }
    Ok(t)
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
        justification: caller.justification.clone(),
        how_to_justify: "give it in SLUICE_REASON (ssh -o 'SetEnv=SLUICE_REASON=\"...\"')",
    };
    let pending = match approvals.hold(held, tokio::time::sleep).await {
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
    let text = match what {
        Work::Exec(line) => Some(line.as_str()),
        _ => None,
    };
    record_request(caller, what.name(), text, decision, approval, reason).await
}

/// [`record`] for any request: `text` is its command line or destination.
async fn record_request(
    caller: &Caller,
    request: &str,
    text: Option<&str>,
    decision: &str,
    approval: Option<u64>,
    reason: Option<&str>,
) -> bool {
    caller.metrics.request(request, decision);
    let Some(audit) = &caller.endpoint.shared.audit else {
        return true;
    };
    let mut body = Vec::with_capacity(256);
    Command {
        text: text.map(str::as_bytes),
        approval,
        reason,
        ..caller.command(Via::Request(request), decision)
    }
    .encode(&mut body);
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

/// Where a client's local port forward (`ssh -L`) goes.
pub(super) struct Forward {
    pub host: String,
    pub port: u32,
    pub originator: String,
    pub originator_port: u32,
}

/// A local port forward, where the guardrails allow them: the host opens the
/// connection (as it would for `ssh -L` straight to it), Sluice relays and
/// counts the bytes (they are not recorded: any protocol may run there).
pub(super) async fn forward(
    caller: Caller,
    channel: Channel<Msg>,
    reply: russh::server::ChannelOpenHandle,
    to: Forward,
) {
    let destination = format!("{}:{}", to.host, to.port);
    let allowed = {
        let generation = caller.endpoint.current.load();
        let policy = &generation.policy;
        still_allowed(&caller, policy).and_then(|t| match policy.targets[t].ssh.port_forwarding {
            Action::Allow => Ok(()),
            _ => Err(format!(
                "port forwarding is not allowed on target `{}`",
                caller.target
            )),
        })
    };
    if let Err(reason) = allowed {
        info!(
            "ssh_refused",
            target = caller.target,
            subject = caller.identity.subject,
            what = destination
        );
        let _ = record_request(
            &caller,
            "forward",
            Some(&destination),
            "deny",
            None,
            Some(&reason),
        )
        .await;
        // Dropping the reply refuses the channel (administratively prohibited).
        return;
    }
    if !record_request(&caller, "forward", Some(&destination), "allow", None, None).await {
        return;
    }
    let opened = match connected(&caller).await {
        Ok(upstream) => upstream
            .channel_open_direct_tcpip(to.host, to.port, to.originator, to.originator_port)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let upch = match opened {
        Ok(c) => c,
        Err(e) => {
            warn!(
                "upstream_forward_failed",
                target = caller.target,
                to = destination,
                error = e
            );
            return reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
        }
    };
    reply.accept().await;
    let (rx, tx) = channel.split();
    let tap = Arc::new(Mutex::new(Tap {
        recording: None,
        screen: None,
        lines: Vec::new(),
    }));
    relay(&caller, rx, tx, upch, tap, false, None, QUIET_STREAM).await;
}

/// One channel, from the decision to its close.
pub(super) async fn run(
    caller: Caller,
    channel: Channel<Msg>,
    work: Work,
    pty: Option<Pty>,
    name: String,
) {
    let (rx, tx) = channel.split();
    let text = match &work {
        Work::Exec(line) => line.clone(),
        Work::Shell => "(interactive shell)".into(),
        Work::Sftp => "(sftp)".into(),
    };
    let mut approval = None;
    match judge(&caller, &work, pty.is_some()) {
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
        Verdict::Approve(spec) => {
            caller.metrics.request(work.name(), "approve");
            match hold(&caller, &tx, spec, &text).await {
                Ok(id) => approval = Some(id),
                Err(message) => {
                    record(&caller, &work, "deny", None, Some(&message)).await;
                    return finish(&tx, &message, REFUSED).await;
                }
            }
        }
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
        // A client without a terminal of its own (`ssh -tt` from a pipe)
        // asks for a 0x0 one; the host then assumes 80x24.
        let (cols, rows) = pty.as_ref().map_or((80, 24), |p| (p.cols, p.rows));
        let (cols, rows) = (
            if cols == 0 { 80 } else { cols },
            if rows == 0 { 24 } else { rows },
        );
        match Recording::create(
            dir,
            &name,
            cols,
            rows,
            &format!("{} on {}: {text}", caller.identity.subject, caller.target),
        ) {
            Ok(r) => {
                // Started on the record: a recording the gateway never got
                // to seal (it stopped mid-session) is named by `audit verify`.
                if let Some(audit) = &caller.endpoint.shared.audit {
                    let mut body = Vec::with_capacity(192);
                    event::Recording {
                        session: &caller.session,
                        target: &caller.target,
                        subject: &caller.identity.subject,
                        file: &r.path().display().to_string(),
                        sealed: None,
                    }
                    .encode(&mut body);
                    audit.side_record(body);
                }
                recording = Some(r)
            }
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
        // The recording was started on the record: sealed, saying why.
        if let Some(mut r) = recording {
            let _ = r.event("m", b"the host refused the request");
            seal(&caller, r);
        }
        return finish(
            &tx,
            &format!("target `{}` refused the request", caller.target),
            FAILED,
        )
        .await;
    }
    // A terminal's commands are read off its screen (sftp has none).
    let screen = match (&pty, &work) {
        (Some(p), Work::Exec(_) | Work::Shell) => Some(Screen::new(p.cols, p.rows)),
        _ => None,
    };
    let mut tap = Tap {
        recording,
        screen,
        lines: Vec::new(),
    };
    if let (Some(r), Some(id)) = (tap.recording.as_mut(), approval) {
        let _ = r.event("m", format!("approved by request {id}").as_bytes());
    }
    let tap = Arc::new(Mutex::new(tap));
    // Text streams are recorded and masked; sftp is a binary protocol:
    // counted only.
    let text_stream = !matches!(work, Work::Sftp);
    let masking = match text_stream {
        true => caller
            .endpoint
            .current
            .load()
            .target(&caller.target)
            .and_then(|(_, plan)| plan.masking.clone()),
        false => None,
    };
    let quiet = match pty {
        Some(_) => QUIET_TERMINAL,
        None => QUIET_STREAM,
    };
    relay(
        &caller,
        rx,
        tx,
        upch,
        tap.clone(),
        text_stream,
        masking,
        quiet,
    )
    .await;
    let recording = tap.lock().ok().and_then(|mut t| t.recording.take());
    if let Some(r) = recording {
        seal(&caller, r);
    }
}

/// Closes a recording and puts its size and SHA-256 into the hash chain.
fn seal(caller: &Caller, recording: Recording) {
    let sealed = match recording.seal() {
        Ok(s) => s,
        Err(e) => return warn!("recording_failed", target = caller.target, error = e),
    };
    if let Some(audit) = &caller.endpoint.shared.audit {
        let mut body = Vec::with_capacity(256);
        event::Recording {
            session: &caller.session,
            target: &caller.target,
            subject: &caller.identity.subject,
            file: &sealed.path.display().to_string(),
            sealed: Some((sealed.bytes, &sealed.sha256)),
        }
        .encode(&mut body);
        audit.side_record(body);
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
    // One deadline for the handshake and the login: a stalled upstream must
    // not hold the connection's other channels.
    let login = upstream::connect(target, CONNECT_TIMEOUT);
    let u = match tokio::time::timeout(CONNECT_TIMEOUT, login).await {
        Ok(u) => Arc::new(u?),
        Err(_) => return Err(format!("no login within {} s", CONNECT_TIMEOUT.as_secs())),
    };
    *slot = Some(u.clone());
    Ok(u)
}

/// How long masked output may wait for the rest of a value split across
/// packets before what is held is shown: the stream masker holds a window of
/// bytes, and a terminal's echo must not wait for the next kilobyte.
const QUIET_TERMINAL: Duration = Duration::from_millis(25);
const QUIET_STREAM: Duration = Duration::from_millis(200);

/// What a channel's relay reads as it passes: the recording, and for a
/// terminal the screen model that commands are read from.
struct Tap {
    recording: Option<Recording>,
    screen: Option<Screen>,
    /// Lines read off the screen, to be recorded as commands.
    lines: Vec<Line>,
}

impl Tap {
    /// `false`: the event could not be recorded (the channel ends).
    fn event(&mut self, kind: &str, data: &[u8]) -> bool {
        if let Some(screen) = &mut self.screen {
            match kind {
                "i" => screen.input(data, &mut self.lines),
                "o" => screen.output(data, &mut self.lines),
                _ => {}
            }
        }
        match self.recording.as_mut().map(|r| r.event(kind, data)) {
            Some(Err(e)) => {
                warn!("recording_failed", error = e);
                false
            }
            _ => true,
        }
    }

    fn resize(&mut self, cols: u32, rows: u32) -> bool {
        if let Some(screen) = &mut self.screen {
            screen.resize(cols, rows);
        }
        self.event("r", format!("{cols}x{rows}").as_bytes())
    }
}

/// The tap behind its lock; the lines read off the screen are recorded as
/// the commands of the session. `false`: the channel must end.
fn tapped(caller: &Caller, tap: &Mutex<Tap>, f: impl FnOnce(&mut Tap) -> bool) -> bool {
    let (ok, lines) = match tap.lock() {
        Ok(mut t) => {
            let ok = f(&mut t);
            (ok, std::mem::take(&mut t.lines))
        }
        Err(_) => return false,
    };
    for line in lines {
        record_line(caller, &line);
    }
    ok
}

/// A command read off an interactive shell's screen: recorded with what the
/// command rules would have said of it (the shell ran it; nothing was held).
fn record_line(caller: &Caller, line: &Line) {
    let generation = caller.endpoint.current.load();
    let policy = &generation.policy;
    let rules = policy.target_index(&caller.target).map(|t| {
        match policy.decide_command(t, &line.text, policy.groups(&caller.identity.groups)) {
            Decision::Allow => "allow",
            Decision::Deny { .. } => "deny",
            Decision::Approve { .. } => "approve",
        }
    });
    caller.metrics.request("shell-line", "observed");
    if let Some(audit) = &caller.endpoint.shared.audit {
        let mut body = Vec::with_capacity(256);
        Command {
            text: Some(line.text.as_bytes()),
            observed: Some(Observed {
                rules: rules.unwrap_or("deny"),
                source: "screen",
                not_recorded_before: line.dropped,
            }),
            ..caller.command(Via::Request("shell-line"), "observed")
        }
        .encode(&mut body);
        audit.side_record(body);
    }
}

/// The output of one stream (stdout or stderr), masked when the target says so.
struct Masked(Option<StreamMasker>);

impl Masked {
    /// The bytes to show for `data` (fewer while a value may still run on).
    fn feed(&mut self, data: Bytes) -> Bytes {
        match &mut self.0 {
            None => data,
            Some(m) => {
                let mut out = Vec::with_capacity(data.len() + 64);
                m.feed(&data, &mut out);
                out.into()
            }
        }
    }

    /// Everything held, masked as far as it can be decided (a value the
    /// pause splits goes on being masked after it).
    fn flush(&mut self) -> Bytes {
        match &mut self.0 {
            Some(m) if m.pending() > 0 => {
                let mut out = Vec::with_capacity(m.pending());
                m.flush(&mut out);
                out.into()
            }
            _ => Bytes::new(),
        }
    }

    fn holds(&self) -> bool {
        self.0.as_ref().is_some_and(|m| m.pending() > 0)
    }
}

/// The relay's view of the client channel: output masked, recorded, read
/// for commands, then sent.
struct Out<'a> {
    caller: &'a Caller,
    tx: &'a ChannelWriteHalf<Msg>,
    tap: &'a Mutex<Tap>,
    /// stdout and stderr.
    streams: [Masked; 2],
    text: bool,
}

impl Out<'_> {
    /// Sends one stream's bytes; `Err(true)`: they could not be recorded.
    async fn send(&mut self, stream: usize, data: Bytes) -> Result<(), bool> {
        if data.is_empty() {
            return Ok(());
        }
        self.caller.metrics.bytes(0, data.len() as u64);
        if self.text && !tapped(self.caller, self.tap, |t| t.event("o", &data)) {
            return Err(true);
        }
        let sent = match stream {
            0 => self.tx.data_bytes(data).await,
            _ => self.tx.extended_data_bytes(1, data).await,
        };
        sent.map_err(|_| false)
    }

    async fn flush(&mut self) -> Result<(), bool> {
        for i in 0..2 {
            let held = self.streams[i].flush();
            self.send(i, held).await?;
        }
        Ok(())
    }

    fn holds(&self) -> bool {
        self.streams.iter().any(Masked::holds)
    }
}

/// Both directions of one channel until the upstream closes it.
#[allow(clippy::too_many_arguments)]
async fn relay(
    caller: &Caller,
    mut rx: russh::ChannelReadHalf,
    tx: ChannelWriteHalf<Msg>,
    upch: Channel<russh::client::Msg>,
    tap: Arc<Mutex<Tap>>,
    text: bool,
    masking: Option<Profile>,
    quiet: Duration,
) {
    let (mut up_rx, up_tx) = upch.split();
    let up_tx = Arc::new(up_tx);
    let upch_close = up_tx.clone();
    let tap_in = tap.clone();
    let caller_in = caller.clone();
    let to_upstream = tokio::spawn(async move {
        let caller = caller_in;
        while let Some(msg) = rx.wait().await {
            let sent = match msg {
                ChannelMsg::Data { data } => {
                    caller.metrics.bytes(data.len() as u64, 0);
                    if text && !tapped(&caller, &tap_in, |t| t.event("i", &data)) {
                        break;
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
                    if !tapped(&caller, &tap_in, |t| t.resize(col_width, row_height)) {
                        break;
                    }
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
    let masker = || Masked(masking.clone().map(StreamMasker::new));
    let mut out = Out {
        caller,
        tx: &tx,
        tap: &tap,
        streams: [masker(), masker()],
        text,
    };
    let mut eof = false;
    let mut unrecorded = false;
    // Since when output has been held: it is shown `quiet` after that at the
    // latest, however steadily more trickles in.
    let mut held_since: Option<tokio::time::Instant> = None;
    loop {
        let msg = if out.holds() {
            let since = *held_since.get_or_insert_with(tokio::time::Instant::now);
            match tokio::time::timeout_at(since + quiet, up_rx.wait()).await {
                Ok(msg) => msg,
                Err(_) => {
                    // Quiet (or held long enough): what is held is shown.
                    held_since = None;
                    match out.flush().await {
                        Ok(()) => continue,
                        Err(e) => {
                            unrecorded = e;
                            break;
                        }
                    }
                }
            }
        } else {
            held_since = None;
            up_rx.wait().await
        };
        let Some(msg) = msg else { break };
        let sent = match msg {
            ChannelMsg::Data { data } => {
                let shown = out.streams[0].feed(data);
                out.send(0, shown).await
            }
            ChannelMsg::ExtendedData { data, .. } => {
                let shown = out.streams[1].feed(data);
                out.send(1, shown).await
            }
            ChannelMsg::ExitStatus { exit_status } => match out.flush().await {
                Ok(()) => tx.exit_status(exit_status).await.map_err(|_| false),
                e => e,
            },
            // A command killed by a signal: the client hears which.
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                let flushed = out.flush().await;
                if let (Ok(()), Some(h)) = (&flushed, &caller.handle) {
                    let _ = h
                        .exit_signal_request(
                            tx.id(),
                            signal_name,
                            core_dumped,
                            error_message,
                            lang_tag,
                        )
                        .await;
                }
                flushed
            }
            ChannelMsg::Eof => {
                eof = true;
                match out.flush().await {
                    Ok(()) => tx.eof().await.map_err(|_| false),
                    e => e,
                }
            }
            ChannelMsg::Close => break,
            _ => Ok(()),
        };
        if let Err(e) = sent {
            unrecorded = e;
            break;
        }
    }
    if !unrecorded {
        unrecorded = out.flush().await == Err(true);
    }
    if unrecorded {
        // Nothing runs unrecorded: the session ends here, and says why.
        let _ = upch_close.close().await;
        to_upstream.abort();
        return finish(
            &tx,
            "the session can no longer be recorded; it was ended",
            REFUSED,
        )
        .await;
    }
    if !eof {
        let _ = tx.eof().await;
    }
    let _ = tx.close().await;
    to_upstream.abort();
}
