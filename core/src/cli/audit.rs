//! `sluice audit verify | search | export | tail`.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use crate::audit::verify::{self, Filter};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and checkpoint signatures; names the first bad record (exit 1).
    Verify {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The gateway's audit public key (default: DIR.signing.pub beside the
        /// log directory, where Sluice keeps it, else DIR/signing.pub).
        #[arg(long, value_name = "FILE")]
        pubkey: Option<PathBuf>,
        /// Accept a log whose last records follow the last checkpoint (a running
        /// or crashed gateway).
        #[arg(long)]
        allow_open_tail: bool,
        /// A checkpoint the log must still hold, `SEQ:HASH` (the gateway logs
        /// it at every checkpoint as `audit_checkpoint anchor=...`, and serves
        /// the latest at `GET /api/audit/anchor`): fails on a log cut back
        /// before it, or rewritten.
        #[arg(long, value_name = "SEQ:HASH", conflicts_with = "anchor")]
        expect: Option<verify::Expect>,
        /// The `[state]` database the gateway anchors its checkpoints in
        /// (`host=... dbname=... user=...`; the password from PGPASSWORD):
        /// the log must still hold the last checkpoint anchored for its key.
        #[arg(long, value_name = "CONNINFO")]
        anchor: Option<String>,
        /// With --anchor: the instance whose anchors to use, when several
        /// instances sign with the same key.
        #[arg(long, value_name = "NAME", requires = "anchor")]
        instance: Option<String>,
    },
    /// Print matching records as JSON lines; with several --dir (one per
    /// instance), merged by time, each record naming its log.
    Search {
        #[arg(long, value_name = "DIR", required = true)]
        dir: Vec<PathBuf>,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Export records for compliance reviews.
    Export {
        #[arg(long, value_name = "DIR", required = true)]
        dir: Vec<PathBuf>,
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "csv"])]
        format: String,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Print the newest records; with -f keep following.
    Tail {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
}

#[derive(clap::Args)]
pub struct FilterArgs {
    /// Records of this subject.
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    target: Option<String>,
    /// Statement kind (e.g. delete, drop).
    #[arg(long)]
    kind: Option<String>,
    /// allow, deny, approve.
    #[arg(long)]
    decision: Option<String>,
    /// Record type (command, result, session_start, auth_failure, reload, ...);
    /// `session` lists sessions' start, end and recording records.
    #[arg(long = "type")]
    record_type: Option<String>,
    /// RFC 3339 time (2026-11-26T22:00:00Z) or an age like 1h, 30m.
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
    /// Substring of the command text.
    #[arg(long)]
    text: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> Result<Filter, String> {
        Ok(Filter {
            user: self.user.clone(),
            target: self.target.clone(),
            kind: self.kind.clone(),
            decision: self.decision.clone(),
            since_ms: self.since.as_deref().map(verify::parse_time).transpose()?,
            until_ms: self.until.as_deref().map(verify::parse_time).transpose()?,
            text: self.text.clone(),
            record_type: self.record_type.clone(),
        })
    }
}

pub fn run(cmd: AuditCommand) -> i32 {
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let result = match cmd {
        AuditCommand::Verify {
            dir,
            pubkey,
            allow_open_tail,
            expect,
            anchor,
            instance,
        } => {
            let (key, explicit) = match verify::load_pubkey(&dir, pubkey.as_deref()) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("sluice audit verify: {e}");
                    return 1;
                }
            };
            if !explicit {
                eprintln!("note: using {}/signing.pub from the log directory; pass --pubkey to check against a key kept elsewhere", dir.display());
            }
            let expect = match anchor {
                None => expect,
                Some(conninfo) => match anchored(&conninfo, &key, instance.as_deref()) {
                    Ok(a) => {
                        eprintln!(
                            "note: the last anchored checkpoint of this log is {}:{}",
                            a.seq, a.hash
                        );
                        Some(a)
                    }
                    Err(e) => {
                        eprintln!("sluice audit verify: FAILED: {e}");
                        return 1;
                    }
                },
            };
            match verify::verify(&dir, &key, allow_open_tail, expect.as_ref()) {
                Ok(r) if r.records == 0 => {
                    let _ = writeln!(out, "ok: the log holds no records yet");
                    Ok(())
                }
                Ok(r) => {
                    let _ = writeln!(
                        out,
                        "ok: {}{}",
                        r.summary(),
                        if r.anchored {
                            ", the expected checkpoint is in it"
                        } else {
                            ""
                        }
                    );
                    for file in &r.unsealed {
                        let _ = writeln!(
                            out,
                            "note: the recording {file} was started and never sealed (the gateway stopped during its session): nothing vouches for its content"
                        );
                    }
                    for (at, seq, last) in &r.crashes {
                        let before = last.map_or("the start".to_owned(), |s| format!("seq {s}"));
                        let _ = writeln!(
                            out,
                            "note: the gateway stopped without closing the log after {before}; sealed on restart at seq {seq} ({at})"
                        );
                    }
                    Ok(())
                }
                Err(e) => Err(format!("FAILED: {e}")),
            }
        }
        AuditCommand::Search { dir, filter } => filter.filter().and_then(|f| {
            let several = dir.len() > 1;
            verify::search_logs(&dir, &f, |log, line, v| {
                // For people: the record's time in RFC 3339 beside its `ts`
                // (`export` writes the records exactly as stored).
                let time = v.get("ts").and_then(serde_json::Value::as_u64);
                match (time, line.strip_prefix(b"{")) {
                    (Some(ms), Some(rest)) => {
                        let _ = write!(out, "{{\"time\":\"{}\",", crate::log::rfc3339_ms(ms));
                        if several {
                            let _ = write!(
                                out,
                                "\"log\":{},",
                                serde_json::Value::from(log.display().to_string())
                            );
                        }
                        let _ = out.write_all(rest);
                    }
                    _ => {
                        let _ = out.write_all(line);
                    }
                }
                let _ = out.write_all(b"\n");
            })
            .map(|_| ())
        }),
        AuditCommand::Export {
            dir,
            format,
            filter,
        } => filter.filter().and_then(|f| {
            if format == "csv" {
                let _ = writeln!(out, "{}", verify::CSV_COLUMNS.join(","));
            }
            verify::search_logs(&dir, &f, |_, line, v| {
                if format == "csv" {
                    let _ = verify::csv_row(v, &mut out);
                } else {
                    let _ = out.write_all(line);
                    let _ = out.write_all(b"\n");
                }
            })
            .map(|_| ())
        }),
        AuditCommand::Tail { dir, follow, lines } => verify::tail(&dir, follow, lines, &mut out),
    };
    let _ = out.flush();
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sluice audit: {e}");
            1
        }
    }
}

/// The last checkpoint anchored in the `[state]` database for the log signed
/// by `key` (and written by `instance`). A log with none anchored fails: a log
/// re-signed with another key is another log.
fn anchored(
    conninfo: &str,
    key: &ed25519_dalek::VerifyingKey,
    instance: Option<&str>,
) -> Result<verify::Expect, String> {
    use crate::approvals::postgres::{describe, Connector};
    let log_key = crate::audit::log_key(key);
    let store = |e: postgres::Error| format!("the anchor store: {}", describe(&e));
    let mut client = Connector::from_conninfo(conninfo)?
        .connect()
        .map_err(store)?;
    let instances: Vec<String> = client
        .query(
            "SELECT DISTINCT instance FROM sluice_audit_checkpoints WHERE log_key = $1 ORDER BY 1",
            &[&log_key],
        )
        .map_err(store)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let instance = match (instance, instances.as_slice()) {
        (_, []) => {
            return Err(format!(
                "no checkpoint of the log signed by key {log_key} is anchored in the store"
            ))
        }
        (Some(name), all) if !all.iter().any(|i| i == name) => {
            return Err(format!(
                "instance `{name}` anchored no checkpoint of the log signed by key {log_key} (instances that did: {})",
                all.join(", ")
            ))
        }
        (Some(name), _) => name.to_owned(),
        (None, [one]) => one.clone(),
        (None, all) => {
            return Err(format!(
                "several instances sign their logs with key {log_key} ({}): name this log's with --instance",
                all.join(", ")
            ))
        }
    };
    let row = client
        .query_one(
            "SELECT seq, hash FROM sluice_audit_checkpoints WHERE log_key = $1 AND instance = $2 \
             ORDER BY seq DESC LIMIT 1",
            &[&log_key, &instance],
        )
        .map_err(store)?;
    Ok(verify::Expect {
        seq: row.get::<_, i64>(0) as u64,
        hash: row.get(1),
    })
}
