//! One client connection: the token login, then each session channel judged
//! and relayed to its own channel on Sluice's connection to the upstream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use sluice_config::Action;

use super::certificate::Limits;
use super::upstream::Upstream;
use super::Endpoint;
use crate::audit::event::{
    AccessDenied, AuthFailure, Command, Event as _, SessionEnd, SessionStart, Via,
};
use crate::identity::Identity;
use crate::metrics::SshTarget;
use crate::{info, warn};

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

/// Every login method the endpoint knows; a connection is told the ones that
/// apply (certificates only where a CA is configured), see [`Connection::try_again`].
fn logins() -> MethodSet {
    MethodSet::from(
        &[
            MethodKind::Password,
            MethodKind::KeyboardInteractive,
            MethodKind::PublicKey,
        ][..],
    )
}

#[derive(Clone, Default)]
pub(super) struct Pty {
    pub(super) term: String,
    pub(super) cols: u32,
    pub(super) rows: u32,
    pub(super) modes: Vec<(russh::Pty, u32)>,
}

/// What a channel's relay task needs to know of its connection.
#[derive(Clone)]
pub(super) struct Caller {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) target: String,
    pub(super) session: String,
    pub(super) identity: Arc<Identity>,
    pub(super) fd: RawFd,
    pub(super) upstream: Arc<tokio::sync::Mutex<Option<Arc<Upstream>>>>,
    /// To send what a channel's write half cannot (an exit signal).
    pub(super) handle: Option<server::Handle>,
    pub(super) metrics: Arc<SshTarget>,
    /// `SLUICE_REASON` from the channel's environment: the requester's reason
    /// for what it holds.
    pub(super) justification: Option<String>,
}

impl Caller {
    /// A command record of this caller's session, with the common fields.
    pub(super) fn command<'a>(&'a self, via: Via<'a>, decision: &'a str) -> Command<'a> {
        Command::new(
            &self.session,
            &self.target,
            &self.identity.subject,
            "ssh",
            via,
            decision,
        )
    }
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
    /// `SLUICE_REASON` a channel's client set (the rest of its environment
    /// is not passed on).
    reasons: HashMap<ChannelId, String>,
    /// Sluice's login to the upstream, made once for the connection's channels.
    upstream: Arc<tokio::sync::Mutex<Option<Arc<Upstream>>>>,
    counter: u32,
    metrics: Arc<SshTarget>,
    /// A certificate login's limits (`None`: a token login).
    limits: Option<Limits>,
    /// Set once the caller has logged in (the accept loop's grace timer reads it).
    pub logged_in: Arc<std::sync::atomic::AtomicBool>,
    /// Counts this connection among the endpoint's open ones until dropped.
    _slot: super::Slot,
}

impl Connection {
    pub fn new(
        endpoint: Arc<Endpoint>,
        target: String,
        peer: SocketAddr,
        stream: &tokio::net::TcpStream,
        slot: super::Slot,
    ) -> Connection {
        let mut sid = [0u8; 8];
        getrandom::fill(&mut sid).expect("the OS random source is available");
        let metrics = endpoint.shared.ssh_metrics.target(&target);
        metrics.open.fetch_add(1, Ordering::Relaxed);
        metrics.total.fetch_add(1, Ordering::Relaxed);
        Connection {
            metrics,
            limits: None,
            endpoint,
            target,
            peer,
            fd: stream.as_raw_fd(),
            session: sid.iter().map(|b| format!("{b:02x}")).collect(),
            identity: None,
            channels: HashMap::new(),
            ptys: HashMap::new(),
            reasons: HashMap::new(),
            upstream: Arc::default(),
            counter: 0,
            logged_in: Arc::default(),
            _slot: slot,
        }
    }

    fn note(&self, build: impl FnOnce(&mut Vec<u8>)) {
        if let Some(audit) = &self.endpoint.shared.audit {
            let mut body = Vec::with_capacity(256);
            build(&mut body);
            audit.side_record(body);
        }
    }

    /// The methods this connection may log in with: the token as a password
    /// (or keyboard-interactive), and certificates where a CA is configured.
    fn methods(&self) -> MethodSet {
        let mut methods =
            MethodSet::from(&[MethodKind::Password, MethodKind::KeyboardInteractive][..]);
        if !self.user_cas().is_empty() {
            methods.push(MethodKind::PublicKey);
        }
        methods
    }

    fn user_cas(&self) -> Vec<String> {
        let generation = self.endpoint.current.load();
        generation
            .config
            .identity
            .as_ref()
            .map(|i| i.ssh_user_ca.clone())
            .unwrap_or_default()
    }

    /// A refused login that may be tried again (a plain reject would take the
    /// method off the list, and OpenSSH would stop asking).
    fn try_again(&self) -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(self.methods()),
            partial_success: false,
        }
    }

    fn refused_login(&self, reason: &str) -> Auth {
        let peer = super::peer_text(self.peer);
        info!(
            "auth_failed",
            target = self.target,
            peer = peer,
            reason = reason
        );
        self.note(|out| {
            AuthFailure {
                target: &self.target,
                protocol: "ssh",
                client: &peer,
                reason,
                startup_user: None,
            }
            .encode(out)
        });
        self.metrics.refused_logins.fetch_add(1, Ordering::Relaxed);
        self.try_again()
    }

    /// An OpenSSH user certificate, checked against `[identity] ssh_user_ca`.
    fn certificate_login(&mut self, cert: &russh::keys::Certificate) -> Auth {
        let cas = self.user_cas();
        let now = crate::identity::unix_now();
        match super::certificate::admit(cert, &cas, self.peer.ip(), now) {
            Ok((identity, limits)) => {
                let how = format!("certificate {} serial {}", cert.key_id(), cert.serial());
                let admitted = self.admit(identity, &how);
                // The certificate's limits bind only a login it made.
                if admitted == Auth::Accept {
                    self.limits = Some(limits);
                }
                admitted
            }
            Err(reason) => self.refused_login(&reason),
        }
    }

    /// Checks the token (the SSH password) and the target's `access`.
    async fn login(&mut self, token: &str) -> Auth {
        let endpoint = self.endpoint.clone();
        let (Some(verifier), Some(keys)) = (&endpoint.verifier, &endpoint.shared.keys) else {
            return self.try_again();
        };
        let now = crate::identity::unix_now();
        let verified =
            crate::identity::verify_fresh(verifier, keys, token.trim(), now, tokio::time::sleep)
                .await;
        let identity = match verified {
            Ok(id) => id,
            Err(e) => return self.refused_login(&e.to_string()),
        };
        self.admit(identity, "token")
    }

    /// A verified caller: the target's `access`, then the session starts.
    fn admit(&mut self, identity: Identity, how: &str) -> Auth {
        let peer = super::peer_text(self.peer);
        let generation = self.endpoint.current.load();
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
                AccessDenied {
                    target: &self.target,
                    protocol: "ssh",
                    client: &peer,
                    subject: &identity.subject,
                    groups: &identity.groups,
                }
                .encode(out)
            });
            self.metrics.refused_logins.fetch_add(1, Ordering::Relaxed);
            return self.try_again();
        }
        info!(
            "session_start",
            target = self.target,
            subject = identity.subject,
            peer = peer
        );
        self.note(|out| {
            SessionStart {
                session: Some(&self.session),
                target: &self.target,
                protocol: "ssh",
                subject: Some(&identity.subject),
                groups: &identity.groups,
                client: &peer,
                tls: None,
                shard: None,
                login: Some(how),
            }
            .encode(out)
        });
        self.identity = Some(Arc::new(identity));
        self.logged_in.store(true, Ordering::Release);
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
            handle: None,
            metrics: self.metrics.clone(),
            justification: None,
        })
    }

    /// A refusal of something the client asked for besides commands;
    /// `request` is its metrics name.
    fn refused(&self, request: &str, what: &str) {
        self.metrics.request(request, "deny");
        let subject = self.identity.as_ref().map_or("", |i| i.subject.as_str());
        info!(
            "ssh_refused",
            target = self.target,
            subject = subject,
            what = what
        );
        let event = Command {
            text: Some(what.as_bytes()),
            ..Command::new(
                &self.session,
                &self.target,
                subject,
                "ssh",
                Via::Request(request),
                "deny",
            )
        };
        self.note(|out| event.encode(out));
    }

    /// The command a certificate forces, if it does.
    fn forced(&self) -> Option<String> {
        self.limits.as_ref().and_then(|l| l.force_command.clone())
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
    fn spawn(&mut self, id: ChannelId, what: Work, session: &Session) -> bool {
        let (Some(channel), Some(mut caller)) = (self.channels.remove(&id), self.caller()) else {
            return false;
        };
        caller.handle = Some(session.handle());
        caller.justification = self.reasons.remove(&id);
        self.counter += 1;
        let pty = self.ptys.remove(&id);
        let name = format!("{}-{}", self.session, self.counter);
        tokio::spawn(super::channel::run(caller, channel, what, pty, name));
        true
    }
}

/// What a channel runs.
pub(super) enum Work {
    Exec(String),
    Shell,
    Sftp,
}

impl Work {
    /// Its name in records and metrics.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Work::Exec(_) => "exec",
            Work::Shell => "shell",
            Work::Sftp => "sftp",
        }
    }
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(self.try_again())
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // A key may be a certificate's: asked to sign only where a CA may
        // have signed it (plain keys are refused after the signature).
        Ok(match self.user_cas().is_empty() {
            true => self.try_again(),
            false => Auth::Accept,
        })
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.refused_login("a plain key is not a login; use an access token or a certificate"))
    }

    async fn auth_openssh_certificate(
        &mut self,
        _user: &str,
        certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        Ok(self.certificate_login(certificate))
    }

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
                // "password" in the prompt: sshpass answers prompts that say it.
                prompts: vec![("Access token (as password): ".into(), false)].into(),
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
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.limits.as_ref().is_some_and(|l| !l.port_forwarding) {
            self.refused(
                "forward",
                &format!("port forwarding to {host}:{port} (the certificate does not permit it)"),
            );
            return Ok(());
        }
        let Some(mut caller) = self.caller() else {
            return Ok(());
        };
        caller.handle = Some(session.handle());
        let to = super::channel::Forward {
            host: host.to_owned(),
            port,
            originator: originator.to_owned(),
            originator_port,
        };
        // Judged, recorded and relayed on its own task; until the reply is
        // sent the client waits, and a dropped reply refuses the channel.
        tokio::spawn(super::channel::forward(caller, channel, reply, to));
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        _reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refused(
            "forward",
            &format!("forwarding to the socket {socket_path}"),
        );
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refused(
            "forward",
            &format!("remote port forwarding from {address}:{port}"),
        );
        Ok(false)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refused("forward", "agent forwarding");
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
        self.refused("forward", "X11 forwarding");
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The requester's reason for what the channel's command may need
        // approved (`ssh -o SetEnv=SLUICE_REASON=...`), for Sluice alone.
        let fits = value.len() <= crate::approvals::MAX_JUSTIFICATION && self.reasons.len() < 64;
        if name == "SLUICE_REASON" && fits {
            self.reasons.insert(channel, value.to_owned());
            return session.channel_success(channel);
        }
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
        if self.limits.as_ref().is_some_and(|l| !l.pty) {
            self.refused("pty", "a terminal (the certificate does not permit-pty)");
            return session.channel_failure(channel);
        }
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
        // A certificate's force-command runs instead of what was asked
        // (which is recorded too, as sshd keeps it in SSH_ORIGINAL_COMMAND).
        let asked = String::from_utf8_lossy(data).into_owned();
        let line = match self.forced() {
            Some(command) => {
                let event = Command {
                    text: Some(asked.as_bytes()),
                    reason: Some("the certificate's force-command runs instead"),
                    ..Command::new(
                        &self.session,
                        &self.target,
                        self.identity.as_ref().map_or("", |i| i.subject.as_str()),
                        "ssh",
                        Via::Request("exec"),
                        "replaced",
                    )
                };
                self.note(|out| event.encode(out));
                command
            }
            None => asked,
        };
        // Success first: the decision is told on the channel (stderr and an
        // exit status), which every client shows.
        session.channel_success(channel)?;
        if !self.spawn(channel, Work::Exec(line), session) {
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
        let work = match self.forced() {
            Some(command) => Work::Exec(command),
            None => Work::Shell,
        };
        if !self.spawn(channel, work, session) {
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
        if name != "sftp" || self.ssh_rules().sftp != Action::Allow || self.forced().is_some() {
            self.refused("sftp", &format!("subsystem {name}"));
            return session.channel_failure(channel);
        }
        session.channel_success(channel)?;
        if !self.spawn(channel, Work::Sftp, session) {
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
        self.reasons.remove(&channel);
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.metrics.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(identity) = &self.identity {
            self.note(|out| {
                SessionEnd {
                    session: Some(&self.session),
                    target: &self.target,
                    protocol: "ssh",
                    subject: Some(&identity.subject),
                    client: None,
                    duration_ms: None,
                    commands: None,
                    bytes_from_client: None,
                    bytes_to_client: None,
                }
                .encode(out)
            });
        }
    }
}
