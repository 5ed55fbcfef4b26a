//! One channel's life: the rules' decision (and an approval), the audit
//! record, Sluice's channel on the upstream connection, both directions
//! relayed and recorded, the recording sealed into the hash chain.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelWriteHalf};
use sluice_config::policy::Decision;
use sluice_config::Action;

use super::recording::Recording;
use super::session::{Caller, Pty, Work};
use super::upstream::{self, Upstream};
use crate::approvals::{self, Key, Opened, Settled};
use crate::audit::{now_ms, Rec};
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
    if caller.identity.expires_at <= crate::identity::unix_now() {
        return Verdict::Deny("your access token has expired; log in again".into());
    }
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
                held @ Verdict::Approve(_) => {
                    if let Verdict::Deny(m) = judge(caller, work, false) {
                        return Verdict::Deny(m);
                    }
                    return held;
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
            let _ = r.event("m", format!("approved by request {id}").as_bytes());
        }
    }
    // Text streams are recorded; sftp is a binary protocol: counted only.
    let text_stream = !matches!(work, Work::Sftp);
    relay(
        rx,
        tx,
        upch,
        recording.clone(),
        text_stream,
        caller.handle.clone(),
    )
    .await;
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

/// Both directions of one channel until the upstream closes it.
async fn relay(
    mut rx: russh::ChannelReadHalf,
    tx: ChannelWriteHalf<Msg>,
    upch: Channel<russh::client::Msg>,
    recording: Arc<Mutex<Option<Recording>>>,
    text: bool,
    handle: Option<russh::server::Handle>,
) {
    let (mut up_rx, up_tx) = upch.split();
    let up_tx = Arc::new(up_tx);
    let upch_close = up_tx.clone();
    // `false`: the event could not be recorded; the channel ends.
    let record = move |kind: &str, data: &[u8]| -> bool {
        let Ok(mut r) = recording.lock() else {
            return false;
        };
        match r.as_mut().map(|r| r.event(kind, data)) {
            Some(Err(e)) => {
                warn!("recording_failed", error = e);
                false
            }
            _ => true,
        }
    };
    let record_in = record.clone();
    let to_upstream = tokio::spawn(async move {
        while let Some(msg) = rx.wait().await {
            let sent = match msg {
                ChannelMsg::Data { data } => {
                    if text && !record_in("i", &data) {
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
                    if !record_in("r", format!("{col_width}x{row_height}").as_bytes()) {
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
    let mut eof = false;
    let mut unrecorded = false;
    while let Some(msg) = up_rx.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                if text && !record("o", &data) {
                    unrecorded = true;
                    break;
                }
                tx.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                if text && !record("o", &data) {
                    unrecorded = true;
                    break;
                }
                tx.extended_data_bytes(ext, data).await
            }
            ChannelMsg::ExitStatus { exit_status } => tx.exit_status(exit_status).await,
            // A command killed by a signal: the client hears which.
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                if let Some(h) = &handle {
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
                Ok(())
            }
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
