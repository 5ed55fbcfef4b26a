//! The `sluice` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod approvals;
mod audit;
mod demo;
mod sessions;

/// Sluice: an access gateway between the people, CI jobs and AI agents that ask for
/// work and the databases and APIs that do it.
///
/// Clients connect with their normal tools; Sluice checks who they are, decides
/// what they may run, records every command and masks sensitive values.
#[derive(Parser)]
#[command(name = "sluice", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM/SIGINT (graceful drain) — SIGHUP reloads the config.
    ///
    /// Logs go to standard error, one `key=value` line per event; set the level
    /// with SLUICE_LOG=error|warn|info|debug.
    Serve {
        /// The configuration file (see config/README.md).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file and print a summary; exit 1 listing every error.
    Check {
        /// The configuration file to validate.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Development tokens: make a signing key and JWKS, mint access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Read the audit log: verify its integrity, search, export, tail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Show the whole product on this machine: a throw-away PostgreSQL with fake
    /// PII, a small JSON API and (where sshd is installed) a throw-away sshd
    /// behind the gateway, and a walkthrough to copy.
    ///
    /// Ctrl-C stops what it started; the state directory stays for inspection.
    Demo {
        /// Where keys, tokens, the config and the audit log go.
        #[arg(long, value_name = "DIR", default_value = "sluice-demo")]
        dir: PathBuf,
        /// Listen on free ports instead of 15432/18080/12222/19470 (printed either way).
        #[arg(long)]
        any_ports: bool,
    },
    /// Act on approval requests through a running gateway (as yourself).
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// The web console on the admin listener.
    #[command(subcommand)]
    Console(ConsoleCommand),
    /// Recorded SSH sessions: list them, replay one in the terminal.
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Write an Ed25519 private key (dev.key.pem) and its JWKS (dev.jwks.json).
    Keygen {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Print a signed access token (EdDSA) for testing and demos.
    Mint {
        /// The private key written by `sluice token keygen`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Subject (`sub`): who the caller is.
        #[arg(long)]
        sub: String,
        /// Groups, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "")]
        groups: Vec<String>,
        /// Audience (`aud`).
        #[arg(long, default_value = "sluice")]
        aud: String,
        /// Issuer (`iss`).
        #[arg(long)]
        iss: String,
        /// Lifetime, e.g. 10m, 1h.
        #[arg(long, default_value = "10m")]
        ttl: String,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. } | Command::Demo { .. }) {
        // A command whose output goes into `head` or a closed pipe ends
        // quietly, like any other Unix tool (Rust ignores SIGPIPE, so a print
        // would panic instead). The gateway keeps ignoring it: a client that
        // hangs up must not end the process.
        // SAFETY: restoring a default signal disposition has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Serve { config } => match crate::runtime::serve(config) {
            Ok(()) => 0,
            Err(e) => {
                crate::error!("fatal", error = format!("{e:#}"));
                1
            }
        },
        Command::Check { config } => check(config),
        Command::Token(cmd) => token(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Approvals(cmd) => approvals::run(cmd),
        Command::Console(ConsoleCommand::Link { conn }) => console_link(&conn),
        Command::Sessions(cmd) => sessions::run(cmd),
        Command::Demo { dir, any_ports } => demo::run(dir, any_ports),
    }
}

fn token(cmd: TokenCommand) -> i32 {
    use crate::identity::token::{keygen, Claims, DevKey};
    match cmd {
        TokenCommand::Keygen { out } => match keygen(&out) {
            Ok((key, jwks)) => {
                println!("private key: {}", key.display());
                println!("jwks:        {}", jwks.display());
                println!("use it with: [identity] jwks = \"file:{}\"", jwks.display());
                0
            }
            Err(e) => {
                eprintln!("sluice token keygen: {e}");
                1
            }
        },
        TokenCommand::Mint {
            key,
            sub,
            groups,
            aud,
            iss,
            ttl,
        } => {
            let Some(ttl) = sluice_config::parse_duration(&ttl) else {
                eprintln!("sluice token mint: invalid --ttl `{ttl}` (e.g. 10m, 1h)");
                return 1;
            };
            let key = match DevKey::load(&key) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("sluice token mint: {e}");
                    return 1;
                }
            };
            let groups: Vec<String> = groups.into_iter().filter(|g| !g.is_empty()).collect();
            let claims = Claims {
                subject: &sub,
                groups: &groups,
                audience: &aud,
                issuer: &iss,
                ttl_secs: ttl.as_secs(),
                now: crate::identity::unix_now(),
            };
            println!("{}", key.sign(&claims.to_json()));
            0
        }
    }
}

/// Rules that leave a PostgreSQL target open to what its guardrails probably
/// mean to stop: code Sluice cannot see, and commands on the database server.
fn policy_warnings(c: &sluice_config::Config) -> Vec<String> {
    use sluice_config::policy::{kind_index, CompiledPolicy, Decision, GroupSet, Statement};
    let Ok(policy) = CompiledPolicy::compile(c) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in &c.targets {
        if t.protocol != sluice_config::Protocol::Postgres || t.guardrails.is_none() {
            continue;
        }
        let Some(i) = policy.target_index(&t.name) else {
            continue;
        };
        let (Some(other), Some(program)) = (kind_index("other"), kind_index("program")) else {
            continue;
        };
        let opaque = Statement {
            kind: other,
            unbounded: false,
            opaque: true,
        };
        if policy.decide(i, opaque, GroupSet::default()) == Decision::Allow {
            out.push(format!(
                "target `{}`: its guardrails allow code Sluice cannot see (DO, CALL, EXECUTE, \
                 dblink, pg_read_file, CREATE FUNCTION, ...): add kinds = [\"opaque\"] with \
                 action = \"deny\" or \"approve\"",
                t.name
            ));
        }
        if policy.explicitly_allows(i, program, GroupSet(u128::MAX)) {
            out.push(format!(
                "target `{}`: a rule allows COPY ... PROGRAM, which runs commands on the \
                 database server",
                t.name
            ));
        }
    }
    out
}

fn check(path: PathBuf) -> i32 {
    let loaded = crate::runtime::load_config(&path).and_then(|c| {
        // What the gateway would refuse at start-up beyond the file's own
        // rules: compiled exactly as `serve` compiles it (policy tables,
        // masking profiles, the credentials' patterns, upstream TLS files).
        let c = std::sync::Arc::new(c);
        crate::shard::Generation::compile(c.clone(), 0)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(c)
    });
    match loaded {
        Ok(c) => {
            println!("{}: ok", path.display());
            let shards = match c.gateway.shards {
                0 => "one per core".to_owned(),
                n => n.to_string(),
            };
            println!("  shards: {shards}");
            match c.gateway.admin {
                Some(a) => println!("  admin: {a}"),
                None => println!("  admin: off"),
            }
            if let Some(id) = &c.identity {
                println!(
                    "  identity: issuer {} audience {} jwks {}",
                    id.issuer,
                    id.audience,
                    id.jwks.as_deref().unwrap_or("(OIDC discovery)")
                );
            }
            if let Some(a) = &c.audit {
                println!("  audit: {} (durability {})", a.dir, a.durability.as_str());
            }
            for t in &c.targets {
                println!(
                    "  target {}: {} {} -> {} access [{}]",
                    t.name,
                    t.protocol.as_str(),
                    t.listen,
                    t.upstream,
                    t.access.join(", ")
                );
            }
            for (name, g) in &c.guardrails {
                println!("  guardrails {name}: {} rules", g.rules.len());
            }
            for (name, m) in &c.masking {
                println!(
                    "  masking {name}: {} detectors, {} column rules",
                    m.detectors.len(),
                    m.columns.len()
                );
            }
            for w in policy_warnings(&c) {
                eprintln!("{}: warning: {w}", path.display());
            }
            0
        }
        Err(errors) => {
            eprintln!("{errors}");
            let n = errors.lines().count();
            eprintln!(
                "{}: {n} error{}",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            1
        }
    }
}

#[derive(clap::Subcommand)]
enum ConsoleCommand {
    /// Print a one-time sign-in link to the console (valid for a minute, used
    /// once), for the identity of the token given.
    Link {
        #[command(flatten)]
        conn: approvals::Connection,
    },
}

fn console_link(conn: &approvals::Connection) -> i32 {
    match approvals::call(conn, "POST", "/api/console/link", Some(String::new())) {
        Ok(v) => {
            println!(
                "{}{}",
                conn.admin.trim_end_matches('/'),
                v["path"].as_str().unwrap_or_default()
            );
            0
        }
        Err(e) => {
            eprintln!("sluice console link: {e}");
            1
        }
    }
}
