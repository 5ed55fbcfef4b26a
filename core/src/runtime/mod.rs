//! The shard-per-core runtime and the process lifecycle.
//!
//! [`serve`] starts one OS thread per shard, each running a monoio runtime (io_uring,
//! or epoll where io_uring is unavailable) with its own `SO_REUSEPORT` listeners, so
//! the kernel spreads connections over cores and a connection never moves. The main
//! thread then only handles signals:
//!
//! - `SIGTERM`/`SIGINT`: every shard stops accepting, open sessions get
//!   `gateway.drain_timeout` to finish, then the process exits 0. A second signal
//!   exits at once.
//! - `SIGHUP`: the configuration file is read, validated and compiled again (a
//!   [`crate::shard::Generation`]); if it is valid every shard installs its own
//!   copy, otherwise the running configuration stays and the errors are
//!   logged. Decisions (access, guardrails, approvals) use the new generation
//!   at open sessions' next statement; what a session set up at its start
//!   (masking, the injected credential, upstream TLS) stays until it ends.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use anyhow::{bail, Context as _};
use sluice_config::{Config, IoDriver, Protocol};

use crate::audit::{Audit, Event as _};
use crate::identity::jwks::{KeySource, KeyStore};
use crate::identity::VerifierConfig;
use crate::shard::{CancelRegistry, Control, Event, Generation, Shard, Shared};
use crate::{error, info, warn};

mod catch;
mod loops;

/// Reads and validates a configuration file, resolving secrets from the environment.
pub fn load_config(path: &Path) -> Result<Config, String> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    sluice_config::parse(&source, &path.display().to_string(), |k| {
        std::env::var(k).ok()
    })
    .map_err(|e| e.to_string())
}

/// Runs the gateway until it is stopped by a signal.
pub fn serve(config_path: PathBuf) -> anyhow::Result<()> {
    // Signals are caught from the start: one that arrives while the audit log
    // is opened (and sealed) or the shards start is handled once they run (a
    // drain), never the default action (a kill).
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .context("cannot install signal handlers")?;
    crate::log::init();
    let config = Arc::new(load_config(&config_path).map_err(anyhow::Error::msg)?);
    for t in &config.targets {
        if t.protocol == Protocol::Mysql {
            bail!(
                "target `{}`: protocol {} is not available in this build yet",
                t.name,
                t.protocol.as_str()
            );
        }
    }
    let generation = Arc::new(Generation::compile(config.clone(), 0).map_err(anyhow::Error::msg)?);
    for t in &config.targets {
        let profile = t.masking.as_ref().and_then(|m| config.masking.get(m));
        if let Some(m) = profile.filter(|m| !m.strict_columns && !m.columns.is_empty()) {
            if t.protocol == Protocol::Postgres {
                warn!(
                    "strict_columns_off",
                    target = t.name,
                    columns = m.columns.len(),
                    note = "column rules mask plain result columns only: an expression over a protected column returns its value"
                );
            }
        }
    }
    let (keys, verifier) = match &config.identity {
        Some(id) => {
            let source = KeySource::parse(id.jwks.as_deref(), &id.issuer);
            let store = KeyStore::start(source, id.jwks_refresh)
                .map_err(|e| anyhow::anyhow!("identity: cannot load the JWKS: {e}"))?;
            (Some(store), Some(verifier_config(id)?))
        }
        None => (None, None),
    };
    let tls = config
        .tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    raise_fd_limit();
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let shards = match config.gateway.shards {
        0 => cores,
        n => n,
    };
    let uring = match config.gateway.io {
        IoDriver::Epoll => false,
        IoDriver::IoUring => {
            if !monoio::utils::detect_uring() {
                bail!("gateway.io = \"io_uring\" but io_uring is unavailable here (kernel too old, or blocked by seccomp)");
            }
            true
        }
        IoDriver::Auto => {
            let ok = monoio::utils::detect_uring();
            if !ok {
                warn!("io_uring_unavailable", fallback = "epoll");
            }
            ok
        }
    };
    let driver = if uring { "io_uring" } else { "epoll" };

    let (audit, mut audit_links) = match &config.audit {
        Some(a) => {
            let settings = crate::audit::Settings::from_config(a);
            let mut settings = settings;
            settings.anchor_file = Some(
                crate::audit::key_path(&settings, a.signing_key.as_deref())
                    .with_extension("anchor"),
            );
            let key = crate::audit::signing_key(&settings, a.signing_key.as_deref())
                .map_err(anyhow::Error::msg)?;
            let (audit, links) = Audit::start(settings, shards, key).map_err(anyhow::Error::msg)?;
            (Some(audit), links.into_iter().map(Some).collect::<Vec<_>>())
        }
        None => (None, (0..shards).map(|_| None).collect()),
    };
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards).map(|_| flume::unbounded()).unzip();
    let shared = Arc::new(Shared {
        controls: senders,
        started: Instant::now(),
        driver,
        keys,
        verifier,
        tls,
        cancels: CancelRegistry::default(),
        approvals: crate::approvals::Approvals::start(&config, audit.clone())
            .map_err(anyhow::Error::msg)?,
        audit,
        lifecycle: std::sync::OnceLock::new(),
        ssh_metrics: Default::default(),
        console: Default::default(),
    });
    // SSH targets run on the SSH endpoint's own runtime, beside the shards.
    let base = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let ssh = crate::gateway::ssh::start(shared.clone(), generation.clone(), &base)
        .map_err(anyhow::Error::msg)?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(shards);
    for (id, control) in receivers.into_iter().enumerate() {
        let (shared, generation, ready) = (shared.clone(), generation.clone(), ready_tx.clone());
        let audit_link = audit_links[id].take();
        let pin = config.gateway.pin_cores.then_some(id % cores);
        let handle = thread::Builder::new()
            .name(format!("sluice-shard-{id}"))
            .spawn(move || {
                if let Some(core) = pin {
                    pin_to_core(core);
                }
                let shard = Shard::new(id, shared, &generation);
                let shard_main = loops::run(shard, control, ready.clone(), audit_link);
                let built = if uring {
                    uring_runtime()
                        .or_else(|e| {
                            // Kernels before 6.0 lack the cooperative flags.
                            info!("uring_flags_unavailable", shard = id, error = e.to_string());
                            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                                .with_entries(RING_ENTRIES)
                                .enable_timer()
                                .build()
                        })
                        .map(|mut rt| rt.block_on(shard_main))
                } else {
                    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()
                        .map(|mut rt| rt.block_on(shard_main))
                };
                if let Err(e) = built {
                    let _ = ready.send(Err(format!(
                        "shard {id}: cannot start the {driver} runtime: {e}"
                    )));
                }
            })
            .context("cannot start a shard thread")?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..shards {
        let outcome = ready_rx
            .recv()
            .unwrap_or_else(|_| Err("a shard exited during start-up".to_owned()));
        if let Err(e) = outcome {
            for c in &shared.controls {
                let _ = c.send(Control::Shutdown);
            }
            for h in handles {
                let _ = h.join();
            }
            bail!(e);
        }
    }
    info!(
        "ready",
        shards = shards,
        driver = driver,
        targets = config.targets.len(),
        admin = config
            .gateway
            .admin
            .map_or_else(|| "off".to_owned(), |a| a.to_string()),
        pid = std::process::id()
    );
    for t in &config.targets {
        info!(
            "listening",
            target = t.name,
            protocol = t.protocol.as_str(),
            listen = t.listen,
            upstream = t.upstream
        );
    }

    lifecycle(config_path, generation, &shared, handles, ssh, signals)
}

fn lifecycle(
    config_path: PathBuf,
    mut current: Arc<Generation>,
    shared: &Shared,
    handles: Vec<thread::JoinHandle<()>>,
    mut ssh: Option<crate::gateway::ssh::SshEndpoint>,
    mut signals: signal_hook::iterator::Signals,
) -> anyhow::Result<()> {
    use signal_hook::consts::SIGHUP;
    let (tx, rx) = mpsc::channel();
    let _ = shared.lifecycle.set(tx.clone());
    let signal_tx = tx.clone();
    thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if signal_tx.send(Event::Signal(sig)).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the signal thread")?;

    let mut handles = Some(handles);
    while let Ok(event) = rx.recv() {
        match event {
            Event::Signal(SIGHUP) => {
                if let Ok(new) = reload(&config_path, &current, shared) {
                    if let Some(s) = &ssh {
                        s.reload(new.clone());
                    }
                    current = new;
                }
            }
            Event::Reload(reply) => {
                let outcome = reload(&config_path, &current, shared).map(|new| {
                    if let Some(s) = &ssh {
                        s.reload(new.clone());
                    }
                    current = new;
                });
                let _ = reply.send(outcome);
            }
            Event::Signal(sig) => match handles.take() {
                Some(handles) => {
                    info!(
                        "stopping",
                        signal = signal_name(sig),
                        drain_timeout_ms = current.config.gateway.drain_timeout.as_millis()
                    );
                    for c in &shared.controls {
                        let _ = c.send(Control::Shutdown);
                    }
                    let tx = tx.clone();
                    let (ssh, drain) = (ssh.take(), current.config.gateway.drain_timeout);
                    thread::spawn(move || {
                        if let Some(s) = ssh {
                            s.stop(drain);
                        }
                        for h in handles {
                            if h.join().is_err() {
                                error!("shard_panicked");
                            }
                        }
                        let _ = tx.send(Event::Drained);
                    });
                }
                None => {
                    warn!(
                        "exiting_now",
                        signal = signal_name(sig),
                        reason = "second stop signal"
                    );
                    std::process::exit(130);
                }
            },
            Event::Drained => break,
        }
    }
    if let Some(audit) = &shared.audit {
        // Every shard has stopped: drain the rings and sign a final checkpoint.
        audit.close();
    }
    info!("stopped");
    Ok(())
}

/// Validates and compiles the file again; on success hands every shard the
/// new generation.
fn reload(path: &Path, current: &Generation, shared: &Shared) -> Result<Arc<Generation>, String> {
    let number = current.number + 1;
    let current = &*current.config;
    match load_config(path) {
        Err(errors) => {
            error!(
                "reload_failed",
                config = path.display(),
                keeping = "running configuration",
                errors = errors
            );
            audit_reload(shared, path, Some(&errors));
            Err(errors)
        }
        Ok(new) => {
            let listeners = |c: &Config| {
                let mut v: Vec<_> = c
                    .targets
                    .iter()
                    .map(|t| (t.name.clone(), t.listen, t.protocol))
                    .collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            };
            if listeners(&new) != listeners(current) || new.gateway.admin != current.gateway.admin {
                warn!(
                    "reload_partial",
                    detail = "targets, listen addresses and the admin listener change only on restart; other settings apply now"
                );
            }
            let new = Arc::new(new);
            let generation = match Generation::compile(new.clone(), number) {
                Ok(g) => Arc::new(g),
                Err(e) => {
                    error!(
                        "reload_failed",
                        config = path.display(),
                        keeping = "running configuration",
                        errors = e
                    );
                    audit_reload(shared, path, Some(&e));
                    return Err(e);
                }
            };
            if new
                .identity
                .as_ref()
                .map(|i| (&i.issuer, &i.audience, &i.jwks))
                != current
                    .identity
                    .as_ref()
                    .map(|i| (&i.issuer, &i.audience, &i.jwks))
            {
                warn!(
                    "reload_partial",
                    detail = "identity settings change only on restart"
                );
            }
            let store = |c: &Config| {
                c.state
                    .as_ref()
                    .map(|s| (s.postgres.clone(), s.instance.clone(), s.tls, s.lease))
            };
            if store(&new) != store(current) {
                warn!(
                    "reload_partial",
                    detail = "the [state] store changes only on restart"
                );
            }
            shared.approvals.reconfigure(&new);
            for c in &shared.controls {
                let _ = c.send(Control::Reload(generation.clone()));
            }
            info!(
                "reloaded",
                config = path.display(),
                targets = new.targets.len()
            );
            audit_reload(shared, path, None);
            Ok(generation)
        }
    }
}

/// Records a reload attempt in the audit log.
fn audit_reload(shared: &Shared, path: &Path, error: Option<&str>) {
    if let Some(audit) = &shared.audit {
        let mut body = Vec::with_capacity(256);
        crate::audit::event::Reload {
            config: &path.display().to_string(),
            error,
        }
        .encode(&mut body);
        audit.side_record(body);
    }
}

fn verifier_config(id: &sluice_config::Identity) -> anyhow::Result<VerifierConfig> {
    let algorithms = id
        .algorithms
        .iter()
        .map(|a| {
            a.parse::<jsonwebtoken::Algorithm>()
                .map_err(|_| anyhow::anyhow!("identity: unknown algorithm {a}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(VerifierConfig {
        issuer: id.issuer.clone(),
        audience: id.audience.clone(),
        groups_claim: id.groups_claim.clone(),
        leeway: id.leeway,
        algorithms,
        hmac_secret: id
            .hmac_secret
            .as_ref()
            .map(|s| s.expose().as_bytes().to_vec()),
        require_typ: id.require_typ.clone(),
    })
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// A gateway holds two descriptors per session; lift the soft limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a stack-allocated struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn pin_to_core(core: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) affects this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            warn!(
                "pin_failed",
                core = core,
                error = std::io::Error::last_os_error()
            );
        }
    }
}

const RING_ENTRIES: u32 = 4096;

/// A shard's io_uring runtime. Only the shard's own thread submits (single
/// issuer), and completions wait for its next trip into the kernel instead of
/// interrupting it with an IPI (cooperative task running): under load the shard
/// enters the kernel for every batch anyway, so nothing waits longer, and the
/// interrupts and forced task switches go away.
fn uring_runtime(
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let mut flags = io_uring::IoUring::builder();
    flags.setup_coop_taskrun().setup_single_issuer();
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(RING_ENTRIES)
        .uring_builder(flags)
        .enable_timer()
        .build()
}
