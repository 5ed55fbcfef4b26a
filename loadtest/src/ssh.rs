//! SSH scenarios, each endpoint an sshd itself, Sluice's SSH endpoint, or an
//! OpenSSH jump host (ProxyJump) in front of the same sshd:
//!
//! - `ssh-exec`: short commands (`true`), each in a new session channel on a
//!   connection the worker keeps; with `--new-connection`, every command gets
//!   a new connection and login too (`ssh HOST true` in a loop). ops/s and
//!   latency.
//! - `ssh-stream`: each worker runs `head -c BYTES /dev/zero` over and over on
//!   its connection and reads the output. MiB/s.
//!
//! The client is russh (the gateway's own SSH library) on a tokio runtime of
//! its own, the same for every endpoint, so what differs between the columns
//! is the server side: the sshd alone, or one hop (Sluice or a jump sshd) in
//! front of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use tokio::time::{timeout, timeout_at};

use crate::token::Minter;
use crate::Sample;

/// How long a connection and its login(s) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `ssh-exec` command may take before it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a goodbye may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause after a slice before the endpoint's CPU is read: sshd's
/// per-connection processes exit (and are reaped into their parent's time)
/// after their connection closes, and that work belongs to this endpoint's
/// slice, not the next one's.
const SETTLE: Duration = Duration::from_millis(500);

/// How a worker logs in at an endpoint.
#[derive(Clone, Debug)]
pub enum Login {
    /// With the client key (`--identity`), as `--user`.
    Key,
    /// With an access token as the password (Sluice), one per worker.
    Token,
    /// At a jump host with the client key, then through a `direct-tcpip`
    /// channel to `target`, logging in there with the key too: `ssh -J`.
    Jump { target: SocketAddr },
}

/// What a worker does.
#[derive(Clone, Debug)]
pub enum Work {
    /// Runs `command` once per operation; `new_connection`: each operation
    /// is a new connection and login too.
    Exec {
        command: String,
        new_connection: bool,
    },
    /// Runs `command` (a byte source that ends) over and over, counting the
    /// bytes of its output.
    Stream { command: String },
}

/// What every connection of a run shares.
pub struct Client {
    user: String,
    identity: Option<Arc<PrivateKey>>,
    minter: Option<Arc<Minter>>,
    config: Arc<client::Config>,
}

/// Accepts any host key: every endpoint is a throw-away server on loopback,
/// and this client measures, it does not guard. (Sluice itself pins the
/// upstream's key.)
struct AnyHostKey;

impl client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

type Handle = client::Handle<AnyHostKey>;

/// A logged-in connection. Through a jump host, the jump connection carries
/// the session's bytes, so it is kept beside it (and dropped after it).
struct Conn {
    session: Handle,
    jump: Option<Handle>,
}

impl Conn {
    /// Says goodbye, the inner session first, each within `CLOSE_TIMEOUT`.
    async fn close(self) {
        for handle in std::iter::once(self.session).chain(self.jump) {
            let bye = handle.disconnect(russh::Disconnect::ByApplication, "", "en");
            let _ = timeout(CLOSE_TIMEOUT, bye).await;
        }
    }
}

impl Client {
    pub fn new(user: String, identity: Option<PrivateKey>, minter: Option<Arc<Minter>>) -> Client {
        // russh's defaults otherwise (chacha20-poly1305, no compression), the
        // same on every hop; Nagle off, as in Sluice's own client to its upstream.
        let config = client::Config {
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        };
        Client {
            user,
            identity: identity.map(Arc::new),
            minter,
            config: Arc::new(config),
        }
    }

    /// Worker `index`'s password at a token endpoint: its own agent's token.
    fn password(&self, index: usize) -> Option<String> {
        self.minter
            .as_ref()
            .map(|m| m.mint(&format!("agent-{index}"), &["agents"]))
    }

    /// Connects to `addr` and logs in as `login` says.
    async fn connect(
        &self,
        addr: SocketAddr,
        login: &Login,
        password: Option<&str>,
    ) -> Result<Conn, String> {
        let mut first = client::connect(self.config.clone(), addr, AnyHostKey)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        match login {
            Login::Key => {
                self.login_key(&mut first).await?;
                Ok(Conn {
                    session: first,
                    jump: None,
                })
            }
            Login::Token => {
                let password = password.ok_or("a token login needs --key")?;
                let r = first
                    .authenticate_password(self.user.clone(), password)
                    .await
                    .map_err(|e| format!("token login: {e}"))?;
                if !r.success() {
                    return Err(format!("{addr} refused the token"));
                }
                Ok(Conn {
                    session: first,
                    jump: None,
                })
            }
            Login::Jump { target } => {
                self.login_key(&mut first).await?;
                let channel = first
                    .channel_open_direct_tcpip(
                        target.ip().to_string(),
                        u32::from(target.port()),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|e| format!("direct-tcpip to {target} via {addr}: {e}"))?;
                let mut session =
                    client::connect_stream(self.config.clone(), channel.into_stream(), AnyHostKey)
                        .await
                        .map_err(|e| format!("SSH to {target} via {addr}: {e}"))?;
                self.login_key(&mut session).await?;
                Ok(Conn {
                    session,
                    jump: Some(first),
                })
            }
        }
    }

    async fn login_key(&self, handle: &mut Handle) -> Result<(), String> {
        let key = self
            .identity
            .clone()
            .ok_or("a key login needs --identity")?;
        let hash = if key.algorithm().is_rsa() {
            handle
                .best_supported_rsa_hash()
                .await
                .map_err(|e| format!("key login: {e}"))?
                .flatten()
        } else {
            None
        };
        let r = handle
            .authenticate_publickey(self.user.clone(), PrivateKeyWithHashAlg::new(key, hash))
            .await
            .map_err(|e| format!("key login: {e}"))?;
        if r.success() {
            Ok(())
        } else {
            Err(format!("the key login of `{}` was refused", self.user))
        }
    }
}

/// Runs `work` against `addr` over `connections` workers for `time`.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    client: &Arc<Client>,
    addr: SocketAddr,
    login: &Login,
    work: &Work,
    connections: usize,
    time: Duration,
) -> Sample {
    let started = Instant::now();
    let deadline = started + time;
    let results: Vec<Outcome> = runtime.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|index| {
                let (client, login, work) = (client.clone(), login.clone(), work.clone());
                tokio::spawn(async move {
                    let password = client.password(index);
                    let w = Worker {
                        client: &client,
                        addr,
                        login: &login,
                        password: password.as_deref(),
                    };
                    match &work {
                        Work::Exec {
                            command,
                            new_connection,
                        } => w.exec_loop(command, *new_connection, deadline).await,
                        Work::Stream { command } => w.stream_loop(command, deadline).await,
                    }
                })
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            out.push(task.await.unwrap_or_else(|e| {
                let mut o = Outcome::new();
                o.fail(format!("worker failed: {e}"));
                o
            }));
        }
        out
    });
    // Ops are counted until the last worker's last command; bytes only
    // until the deadline.
    let elapsed = match work {
        Work::Exec { .. } => started.elapsed(),
        Work::Stream { .. } => time,
    };
    std::thread::sleep(SETTLE);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut bytes, mut errors, mut first_error) = (0, 0, None);
    for o in results {
        let _ = latency.add(&o.latency);
        bytes += o.bytes;
        errors += o.errors;
        first_error = first_error.or(o.first_error);
    }
    if let Some(e) = first_error {
        eprintln!("    first error at {addr}: {e}");
    }
    Sample {
        ops: match work {
            Work::Exec { .. } => latency.len(),
            Work::Stream { .. } => bytes,
        },
        elapsed,
        errors,
        latency,
        held: None,
    }
}

/// What one worker measured.
struct Outcome {
    latency: Histogram<u64>,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            bytes: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn fail(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// One worker: its endpoint, its login and its password.
struct Worker<'a> {
    client: &'a Client,
    addr: SocketAddr,
    login: &'a Login,
    password: Option<&'a str>,
}

impl Worker<'_> {
    async fn connect(&self) -> Result<Conn, String> {
        timeout(
            CONNECT_TIMEOUT,
            self.client.connect(self.addr, self.login, self.password),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no login at {} within 10 s", self.addr)))
    }

    /// Closed loop of commands until `deadline`. A failed connection or login
    /// ends the worker (the endpoint is down or refuses it), except with
    /// `new_connection`, where the login is part of what is measured; a
    /// failed command is counted and the next one tried, on a new connection
    /// if the old one broke or hung.
    async fn exec_loop(&self, command: &str, new_connection: bool, deadline: Instant) -> Outcome {
        let mut out = Outcome::new();
        let mut conn: Option<Conn> = None;
        while Instant::now() < deadline {
            let t0 = Instant::now();
            let c = match conn.take() {
                Some(c) => c,
                None => match self.connect().await {
                    Ok(c) => c,
                    Err(e) => {
                        out.fail(e);
                        if new_connection {
                            continue;
                        }
                        break;
                    }
                },
            };
            // A kept connection's first login is not part of its first command.
            let t0 = if new_connection { t0 } else { Instant::now() };
            let (result, stuck) = match timeout(OP_TIMEOUT, exec(&c.session, command)).await {
                Ok(r) => (r, false),
                Err(_) => (Err(format!("`{command}` took over 30 s")), true),
            };
            match result {
                Ok(()) => out
                    .latency
                    .saturating_record(t0.elapsed().as_micros().max(1) as u64),
                Err(e) => out.fail(e),
            }
            if new_connection || stuck || c.session.is_closed() {
                c.close().await;
            } else {
                conn = Some(c);
            }
        }
        if let Some(c) = conn {
            c.close().await;
        }
        out
    }

    /// Runs the byte source over and over on one connection until `deadline`,
    /// counting the bytes that arrive before it.
    async fn stream_loop(&self, command: &str, deadline: Instant) -> Outcome {
        let mut out = Outcome::new();
        let deadline_t = tokio::time::Instant::from_std(deadline);
        let conn = match timeout_at(deadline_t, self.connect()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                out.fail(e);
                return out;
            }
            Err(_) => return out,
        };
        while Instant::now() < deadline {
            match timeout_at(
                deadline_t,
                read_output(&conn.session, command, &mut out.bytes),
            )
            .await
            {
                Err(_) | Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    out.fail(e);
                    break;
                }
            }
        }
        conn.close().await;
        out
    }
}

/// Opens a session channel and runs `command` in it.
async fn open_exec(session: &Handle, command: &str) -> Result<russh::Channel<client::Msg>, String> {
    let channel = session
        .channel_open_session()
        .await
        .map_err(|e| format!("open a session channel: {e}"))?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| format!("exec `{command}`: {e}"))?;
    Ok(channel)
}

/// What a command's channel said, until the server closed it.
#[derive(Default)]
struct Ending {
    status: Option<u32>,
    refused: bool,
    /// The start of its stderr, for the error message.
    stderr: Vec<u8>,
}

impl Ending {
    /// Takes in one message that is not output.
    fn note(&mut self, msg: ChannelMsg) {
        match msg {
            ChannelMsg::ExitStatus { exit_status } => self.status = Some(exit_status),
            ChannelMsg::Failure => self.refused = true,
            ChannelMsg::ExtendedData { data, .. } if self.stderr.len() < 200 => {
                self.stderr.extend_from_slice(&data[..data.len().min(200)]);
            }
            _ => {}
        }
    }

    fn result(self, command: &str) -> Result<(), String> {
        let stderr = String::from_utf8_lossy(&self.stderr);
        let stderr = stderr.trim();
        match (self.refused, self.status) {
            (false, Some(0)) => Ok(()),
            (true, _) => Err(format!("the server refused to run `{command}`")),
            (_, Some(s)) => Err(format!("`{command}` exited with {s}: {stderr}")),
            (_, None) => Err(format!(
                "`{command}`: the channel closed without an exit status: {stderr}"
            )),
        }
    }
}

/// Runs `command` in a new session channel; `Ok` once the server closed the
/// channel after exit status 0.
async fn exec(session: &Handle, command: &str) -> Result<(), String> {
    let mut channel = open_exec(session, command).await?;
    let mut ending = Ending::default();
    // `wait` ends (`Close`, then `None`) when the server closes the channel.
    while let Some(msg) = channel.wait().await {
        if matches!(msg, ChannelMsg::Close) {
            break;
        }
        ending.note(msg);
    }
    ending.result(command)
}

/// Runs `command` in a new session channel and adds its output's size to
/// `bytes` as it arrives (so a caller that gives up at a deadline keeps what
/// came before it).
async fn read_output(session: &Handle, command: &str, bytes: &mut u64) -> Result<(), String> {
    let mut channel = open_exec(session, command).await?;
    let mut ending = Ending::default();
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => *bytes += data.len() as u64,
            ChannelMsg::Close => break,
            other => ending.note(other),
        }
    }
    ending.result(command)
}
