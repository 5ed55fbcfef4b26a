//! The audit log through the real binary: every event class, tamper detection,
//! crash recovery, fail-closed on a full disk, and the CLI.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sluice_protocols::postgres::encode;
use support::pg::*;
use support::*;

struct Setup {
    pg: PgCluster,
    keys: Keys,
    sluice: Sluice,
    addr: std::net::SocketAddr,
    audit: PathBuf,
    dir: tempfile::TempDir,
}

fn config(
    keys: &Keys,
    addr: std::net::SocketAddr,
    pg: &PgCluster,
    audit: &Path,
    durability: &str,
) -> String {
    format!(
        "[gateway]\nshards = 2\n{}[audit]\ndir = \"{}\"\ndurability = \"{durability}\"\ncheckpoint_every = 50\n\n{}[guardrails.g]\nrules = [{{ kinds = [\"drop\"], action = \"deny\", message = \"no drops\" }}]\n",
        keys.identity_block(),
        audit.display(),
        pg_target("db", addr, pg.addr(), "guardrails = \"g\"")
    )
}

fn setup(durability: &str) -> Setup {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let audit = dir.path().join("audit");
    let addr = free_addr();
    let sluice = Sluice::start(&config(&keys, addr, &pg, &audit, durability));
    Setup {
        pg,
        keys,
        sluice,
        addr,
        audit,
        dir,
    }
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(sluice_bin()).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn records(audit: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for seg in sluice::audit::chain::segments(audit).unwrap() {
        // A live strict segment ends in spaces filled ahead of the records.
        for line in std::fs::read_to_string(seg).unwrap().lines() {
            if !line.trim().is_empty() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
    }
    out
}

fn stop(s: &mut Sluice) {
    s.signal(libc::SIGTERM);
    assert_eq!(
        s.wait_exit(Duration::from_secs(20))
            .and_then(|st| st.code()),
        Some(0)
    );
}

#[test]
fn every_event_class_is_recorded_and_the_log_verifies() {
    let mut s = setup("strict");
    let t = s.keys.token("alice", &["sre"]);
    let mut c = connect(s.addr, &t, "postgres").unwrap();
    c.batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)")
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM t WHERE id > $1", &[&0i32])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    let _ = c.batch_execute("DROP TABLE t");
    drop(c);
    let _ = connect(s.addr, "garbage", "postgres");
    let _ = connect(s.addr, &s.keys.token("eve", &["marketing"]), "postgres");
    let cfg = std::fs::read_to_string(&s.sluice.config_path).unwrap();
    s.sluice
        .rewrite_config(&cfg.replace("no drops", "drops are off"));
    s.sluice.signal(libc::SIGHUP);
    assert!(s.sluice.wait_log("event=reloaded", Duration::from_secs(10)));
    stop(&mut s.sluice);

    let recs = records(&s.audit);
    let of = |t: &str| recs.iter().filter(|r| r["type"] == t).collect::<Vec<_>>();
    for t in [
        "session_start",
        "session_end",
        "command",
        "result",
        "auth_failure",
        "access_denied",
        "reload",
        "checkpoint",
    ] {
        assert!(!of(t).is_empty(), "no {t} record in {recs:#?}");
    }
    let start = &of("session_start")[0];
    assert_eq!(
        (start["subject"].as_str(), start["target"].as_str()),
        (Some("alice"), Some("db"))
    );
    assert_eq!(start["groups"][0], "sre");
    let drop = of("command")
        .into_iter()
        .find(|r| r["text"] == "DROP TABLE t")
        .expect("the drop is recorded");
    assert_eq!(
        (
            drop["decision"].as_str(),
            drop["reason"].as_str(),
            drop["rule"].as_u64()
        ),
        (Some("deny"), Some("no drops"), Some(1))
    );
    assert_eq!(drop["kinds"][0], "drop");
    let select = of("command")
        .into_iter()
        .find(|r| r["message"] == "parse" && r["text"].as_str().unwrap().contains("count(*)"))
        .unwrap();
    assert_eq!(select["decision"], "allow");
    // Prepared: the Parse's sync group returns no rows, the Execute's returns one.
    let results: Vec<_> = of("result")
        .into_iter()
        .filter(|r| {
            r["cmds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c.as_str() == Some(&select["cmd"].to_string()))
        })
        .collect();
    assert!(results.iter().any(|r| r["rows"] == 1), "{results:?}");
    assert_eq!(
        of("auth_failure")[0]["reason"],
        "token is not a well-formed JWT"
    );
    assert_eq!(of("access_denied")[0]["subject"], "eve");
    assert!(of("session_end")[0]["commands"].as_u64().unwrap() >= 3);

    let dir = s.audit.to_str().unwrap();
    let (code, out, err) = cli(&["audit", "verify", "--dir", dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: "), "{out}");
    let (code, out, _) = cli(&[
        "audit",
        "search",
        "--dir",
        dir,
        "--decision",
        "deny",
        "--kind",
        "drop",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    // Each line carries its time for people, beside the stored `ts`.
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let time = line["time"].as_str().unwrap_or_default();
    assert!(time.len() == 24 && time.ends_with('Z'), "{out}");
    assert!(line["ts"].as_u64().is_some(), "{out}");
    let (_, out, _) = cli(&[
        "audit", "search", "--dir", dir, "--user", "alice", "--text", "count(*)",
    ]);
    assert!(
        out.lines().count() >= 1 && out.lines().all(|l| l.contains("count(*)")),
        "{out}"
    );
    let (_, out, _) = cli(&[
        "audit", "search", "--dir", dir, "--since", "1h", "--type", "reload",
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let (_, out, _) = cli(&[
        "audit",
        "search",
        "--dir",
        dir,
        "--until",
        "2000-01-01T00:00:00Z",
    ]);
    assert_eq!(out, "");
    let (code, csv, _) = cli(&["audit", "export", "--dir", dir, "--format", "csv"]);
    assert_eq!(code, 0);
    assert!(csv.starts_with("seq,ts,time,type,subject,target"), "{csv}");
    let first = csv.lines().nth(1).unwrap();
    let time = first.split(',').nth(2).unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{first}"
    );
    assert_eq!(csv.lines().count(), recs.len() + 1);
    let (_, tail, _) = cli(&["audit", "tail", "--dir", dir, "-n", "1"]);
    assert!(tail.contains("\"type\":\"checkpoint\""), "{tail}");
}

/// A small finished log to tamper with.
fn small_log() -> (tempfile::TempDir, PathBuf) {
    let s = setup("batched");
    let t = s.keys.token("alice", &["sre"]);
    let mut c = connect(s.addr, &t, "postgres").unwrap();
    for i in 0..3 {
        c.batch_execute(&format!("SELECT {i}")).unwrap();
    }
    drop(c);
    let Setup {
        mut sluice,
        audit,
        dir,
        ..
    } = s;
    stop(&mut sluice);
    (dir, audit)
}

fn verify(audit: &Path, pubkey: &Path) -> (i32, String) {
    let (code, out, err) = cli(&[
        "audit",
        "verify",
        "--dir",
        audit.to_str().unwrap(),
        "--pubkey",
        pubkey.to_str().unwrap(),
    ]);
    (code, format!("{out}{err}"))
}

#[test]
fn verify_detects_every_flipped_bit_deletion_swap_truncation_and_forgery() {
    let (_keep, audit) = small_log();
    let segment = sluice::audit::chain::segments(&audit)
        .unwrap()
        .pop()
        .unwrap();
    // Keep the public key out of the log directory, as an auditor would.
    let pubkey = audit.parent().unwrap().join("trusted.pub");
    std::fs::copy(audit.join("signing.pub"), &pubkey).unwrap();
    let good = std::fs::read(&segment).unwrap();
    assert_eq!(verify(&audit, &pubkey).0, 0);
    let lines: Vec<&[u8]> = good.split_inclusive(|&b| b == b'\n').collect();
    assert!(lines.len() >= 8, "{} records", lines.len());

    // One flipped bit, at every byte of the log.
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        std::fs::write(&segment, &bad).unwrap();
        let (code, out) = verify(&audit, &pubkey);
        assert_eq!(code, 1, "flip at byte {i} went unnoticed");
        assert!(out.contains("FAILED: audit-"), "names the record: {out}");
    }
    // A deleted record.
    let without: Vec<u8> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .flat_map(|(_, l)| l.to_vec())
        .collect();
    std::fs::write(&segment, without).unwrap();
    let (code, out) = verify(&audit, &pubkey);
    assert_eq!(code, 1);
    assert!(out.contains(":4: record seq 4 follows seq 2"), "{out}");
    // Two swapped records.
    let mut swapped: Vec<&[u8]> = lines.clone();
    swapped.swap(2, 3);
    std::fs::write(&segment, swapped.concat()).unwrap();
    let (code, out) = verify(&audit, &pubkey);
    assert_eq!(code, 1);
    assert!(out.contains(":3: record seq 3 follows seq 1"), "{out}");
    // A truncated file, cut inside a record and at a record boundary.
    std::fs::write(&segment, &good[..good.len() - 10]).unwrap();
    let (code, out) = verify(&audit, &pubkey);
    assert_eq!(code, 1);
    assert!(out.contains("torn record"), "{out}");
    let cut: usize = lines[..lines.len() - 1].iter().map(|l| l.len()).sum();
    std::fs::write(&segment, &good[..cut]).unwrap();
    let (code, out) = verify(&audit, &pubkey);
    assert_eq!(code, 1);
    assert!(out.contains("without a signed checkpoint"), "{out}");
    // A forged checkpoint: signed with another key, chain intact.
    std::fs::write(&segment, &good).unwrap();
    let forger = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let last: Value = serde_json::from_slice(lines.last().unwrap()).unwrap();
    let (seq, prev) = (
        last["seq"].as_u64().unwrap(),
        last["prev"].as_str().unwrap(),
    );
    let (ts, n) = (
        last["ts"].as_u64().unwrap(),
        last["records"].as_u64().unwrap(),
    );
    use base64::Engine as _;
    use ed25519_dalek::Signer;
    let sig = base64::engine::general_purpose::STANDARD.encode(
        forger
            .sign(sluice::audit::chain::checkpoint_message(seq, prev, ts, n).as_bytes())
            .to_bytes(),
    );
    let forged_line = String::from_utf8(lines.last().unwrap().to_vec())
        .unwrap()
        .replace(last["sig"].as_str().unwrap(), &sig);
    let forged = [lines[..lines.len() - 1].concat(), forged_line.into_bytes()].concat();
    std::fs::write(&segment, forged).unwrap();
    let (code, out) = verify(&audit, &pubkey);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!("checkpoint seq {seq}: signature does not verify")),
        "{out}"
    );
}

#[test]
fn sigkill_under_load_loses_no_answered_command_and_recovers_the_tail() {
    let s = setup("strict");
    let t = s.keys.token("loader", &["agents"]);
    s.pg.psql("CREATE TABLE crash (id int)");
    // Background load: pgbench through the gateway.
    let port = s.addr.port().to_string();
    let mut bench = Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "x",
            "-c",
            "4",
            "-T",
            "30",
            "-n",
            "-S",
            "postgres",
        ])
        .env("PGPASSWORD", &t)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = s.addr;
    let writer = std::thread::spawn(move || {
        let mut answered = Vec::new();
        let Ok(mut c) = connect(addr, &t, "postgres") else {
            return answered;
        };
        for i in 0..100_000 {
            if c.batch_execute(&format!("INSERT INTO crash VALUES ({i})"))
                .is_err()
            {
                break;
            }
            answered.push(i);
        }
        answered
    });
    std::thread::sleep(Duration::from_millis(1500));
    s.sluice.signal(libc::SIGKILL);
    let answered = writer.join().unwrap();
    let _ = bench.kill();
    let _ = bench.wait();
    assert!(
        answered.len() > 10,
        "the load ran ({} inserts answered)",
        answered.len()
    );

    // Every insert the client saw answered has its command record on disk.
    let recs = records_lenient(&s.audit);
    for i in &answered {
        let text = format!("INSERT INTO crash VALUES ({i})");
        assert!(
            recs.iter().any(|r| r.contains(&text)),
            "answered insert {i} has no record"
        );
    }
    // Restart on the same log: a torn tail is cut, new records chain on, and the
    // log verifies after a clean stop.
    let cfg = std::fs::read_to_string(&s.sluice.config_path).unwrap();
    let mut again = Sluice::start(&cfg);
    let mut c = connect(s.addr, &s.keys.token("after", &["sre"]), "postgres").unwrap();
    c.batch_execute("SELECT 'after the crash'").unwrap();
    drop(c);
    stop(&mut again);
    let (code, out, err) = cli(&["audit", "verify", "--dir", s.audit.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Lines of every segment, without parsing (the tail may be torn).
fn records_lenient(audit: &Path) -> Vec<String> {
    sluice::audit::chain::segments(audit)
        .unwrap()
        .into_iter()
        .flat_map(|s| {
            std::fs::read_to_string(s)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mounting a tmpfs for the full-disk test needs root: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs(path.to_path_buf())
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_commands_until_space_returns() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let mnt = dir.path().join("mnt");
    let _fs = Tmpfs::mount(&mnt, "512k");
    let audit = mnt.join("audit");
    let addr = free_addr();
    let sluice = Sluice::start(&config(&keys, addr, &pg, &audit, "strict"));
    pg.psql("CREATE TABLE ff (id int)");
    let mut c = connect(addr, &keys.token("alice", &["sre"]), "postgres").unwrap();
    c.batch_execute("INSERT INTO ff VALUES (1)")
        .expect("works while there is space");

    // Fill the filesystem.
    let filler = mnt.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 1 << 20]);
    let mut refused = None;
    for i in 2..200 {
        match c.batch_execute(&format!(
            "INSERT INTO ff VALUES ({i}) -- {}",
            "x".repeat(3000)
        )) {
            Ok(()) => continue,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("commands are refused once the log cannot be written");
    assert_eq!(sqlstate(&err), "53100", "{err:?}");
    assert!(message(&err).contains("audit log"), "{}", message(&err));
    let count_before = pg.psql("SELECT count(*) FROM ff");
    assert!(
        c.batch_execute("INSERT INTO ff VALUES (9999)").is_err(),
        "still refused"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM ff WHERE id = 9999"),
        "0",
        "nothing ran unrecorded"
    );
    assert!(sluice.logs().contains("event=audit_write_failed"));

    // Space returns: commands flow again.
    std::fs::remove_file(&filler).unwrap();
    let ok = wait_for(Duration::from_secs(15), || {
        c.batch_execute("INSERT INTO ff VALUES (10000)").ok()
    });
    assert!(ok.is_some(), "commands flow again after space returns");
    assert!(sluice.wait_log("event=audit_recovered", Duration::from_secs(5)));
    assert_ne!(pg.psql("SELECT count(*) FROM ff"), count_before);
}

#[test]
fn segments_rotate_by_size_and_old_ones_are_retired() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let audit = dir.path().join("audit");
    let addr = free_addr();
    let cfg = config(&keys, addr, &pg, &audit, "batched").replace(
        "checkpoint_every = 50\n",
        "checkpoint_every = 50\nsegment_size = 8192\nretention_size = 40000\n",
    );
    let mut sluice = Sluice::start(&cfg);
    let mut c = connect(addr, &keys.token("alice", &["sre"]), "postgres").unwrap();
    // Bursts with pauses, so the writer commits many separate batches.
    for burst in 0..40 {
        for i in 0..10 {
            c.batch_execute(&format!(
                "SELECT {burst}{i} AS n, '{}' AS pad",
                "p".repeat(100)
            ))
            .unwrap();
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    drop(c);
    stop(&mut sluice);
    let segments = sluice::audit::chain::segments(&audit).unwrap();
    assert!(segments.len() >= 3, "rotated: {segments:?}");
    let total: u64 = segments.iter().map(|s| s.metadata().unwrap().len()).sum();
    let largest = segments
        .iter()
        .map(|s| s.metadata().unwrap().len())
        .max()
        .unwrap();
    assert!(
        total <= 40000 + largest,
        "retention keeps the log near its size limit ({total} bytes)"
    );
    let first = std::fs::read_to_string(&segments[0]).unwrap();
    let first: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert!(
        first["seq"].as_u64().unwrap() > 0,
        "the oldest segments were removed"
    );
    let (code, out, err) = cli(&["audit", "verify", "--dir", audit.to_str().unwrap()]);
    assert_eq!(
        code, 0,
        "the remaining chain verifies across segments: {out}{err}"
    );
}

/// A crash is sealed at the next start (the log verifies again, and says so);
/// a log cut back to an earlier checkpoint, or rewritten and re-signed with a
/// key of the attacker's, is caught by `--expect` and by the public key kept
/// beside the signing key, outside the log directory.
#[test]
fn crashes_are_sealed_and_anchors_catch_a_log_cut_back_or_re_signed() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let audit = dir.path().join("audit");
    let (addr, admin) = (free_addr(), free_addr());
    // Strict: the commands' records are on disk before they run, so the
    // crash leaves a log to seal.
    let cfg = config(&keys, addr, &pg, &audit, "strict").replacen(
        "shards = 2\n",
        &format!("shards = 2\nadmin = \"{admin}\"\n"),
        1,
    );
    let t = keys.token("alice", &["sre"]);
    let run = |n: usize| {
        let mut c = connect(addr, &t, "postgres").unwrap();
        for i in 0..n {
            c.batch_execute(&format!("SELECT {i}")).unwrap();
        }
    };
    // The key is created beside the log, not in it.
    let key = dir.path().join("audit.signing.key");
    let trusted = dir.path().join("audit.signing.pub");
    let first = Sluice::start(&cfg);
    assert!(key.exists() && trusted.exists() && !audit.join("signing.key").exists());
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    run(5);
    // The live segment is filled ahead with spaces (data-only flushes).
    let live = sluice::audit::chain::segments(&audit)
        .unwrap()
        .pop()
        .unwrap();
    assert!(std::fs::read(&live).unwrap().ends_with(b"    "));
    first.signal(libc::SIGKILL);
    drop(first);

    // Restarted, with no traffic: the log is sealed and verifies at once.
    let mut second = Sluice::start(&cfg);
    let (code, out, err) = cli(&["audit", "verify", "--dir", audit.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stopped without closing the log"), "{out}");
    let recovered = records(&audit)
        .into_iter()
        .find(|r| r["type"] == "recovered")
        .expect("a recovered record");
    assert!(recovered["last_seq"].as_u64().is_some(), "{recovered}");
    assert_eq!(recovered["torn_bytes"], 0, "the fill is not torn bytes");
    // The sealing checkpoint is announced in the log and on the admin API.
    let (status, body) = http_get(admin, "/api/audit/anchor");
    assert_eq!(status, 200, "{body}");
    let early: Value = serde_json::from_str(&body).unwrap();
    let early = early["anchor"].as_str().unwrap().to_owned();
    assert!(
        second.logs().contains(&format!("anchor={early}")),
        "{}",
        second.logs()
    );
    run(5);
    stop(&mut second);
    // A closed segment holds its records and nothing after them.
    let closed = std::fs::read(
        sluice::audit::chain::segments(&audit)
            .unwrap()
            .pop()
            .unwrap(),
    )
    .unwrap();
    assert!(
        closed.ends_with(b"}\n"),
        "{:?}",
        &closed[closed.len().saturating_sub(20)..]
    );
    let logs = second.logs();
    let last = logs
        .lines()
        .rev()
        .find_map(|l| l.split("event=audit_checkpoint anchor=").nth(1))
        .expect("the final checkpoint is announced")
        .trim()
        .to_owned();
    let verify_with = |extra: &[&str]| {
        let mut args = vec!["audit", "verify", "--dir", audit.to_str().unwrap()];
        args.extend_from_slice(extra);
        cli(&args)
    };
    assert_eq!(verify_with(&["--expect", &last]).0, 0);
    assert_eq!(verify_with(&["--expect", &early]).0, 0);

    // Cut back to the sealing checkpoint: still a valid, signed log, but not
    // the one the last anchor describes.
    let segment = sluice::audit::chain::segments(&audit)
        .unwrap()
        .pop()
        .unwrap();
    let full = std::fs::read(&segment).unwrap();
    let seq: u64 = early.split(':').next().unwrap().parse().unwrap();
    let text = String::from_utf8(full.clone()).unwrap();
    let cut: usize = text
        .split_inclusive('\n')
        .take_while(|l| !l.starts_with(&format!("{{\"seq\":{},", seq + 1)))
        .map(str::len)
        .sum();
    std::fs::write(&segment, &full[..cut]).unwrap();
    assert_eq!(verify_with(&[]).0, 0, "a cut-back log verifies on its own");
    let (code, out, err) = verify_with(&["--expect", &last]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("cut back") || out.contains("cut back"),
        "{out}{err}"
    );
    std::fs::write(&segment, &full).unwrap();

    // Rewritten and re-signed with a key of the attacker's (all an attacker
    // who can write the log directory has): the log's own `signing.pub` is
    // replaced and accepts it; the key kept beside the signing key (what
    // verify uses by default) does not, and neither does the last anchor.
    let forged = forge(&audit, &segment);
    let in_log = audit.join("signing.pub");
    assert_eq!(
        verify_with(&["--pubkey", in_log.to_str().unwrap()]).0,
        0,
        "the forgery verifies against its own key"
    );
    assert_eq!(verify_with(&[]).0, 1, "but not by default");
    let (code, out, err) = verify_with(&["--pubkey", trusted.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("signature does not verify"),
        "{out}{err}"
    );
    let (code, out, err) = verify_with(&["--expect", &last]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(forged > 0);
    // Nor does the gateway seal over it: the checkpoint it wrote last (kept
    // beside its key) is gone, so it refuses to start.
    let refused = Sluice::try_start(&cfg, &[])
        .err()
        .expect("refuses to start");
    assert!(refused.contains("no longer holds checkpoint"), "{refused}");
}

/// Rewrites every record's text of `SELECT` to `SELECT 'x'`, re-chains the
/// segment and re-signs its checkpoints with a fresh key, whose public half
/// replaces the log's `signing.pub`. Returns the records changed.
fn forge(audit: &Path, segment: &Path) -> usize {
    use base64::Engine as _;
    use ed25519_dalek::pkcs8::EncodePublicKey;
    use ed25519_dalek::Signer;
    use sluice::audit::chain;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let mut prev = chain::GENESIS.to_owned();
    let mut out = Vec::new();
    let mut changed = 0;
    for line in std::fs::read_to_string(segment).unwrap().lines() {
        let mut v: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
        let seq = v["seq"].as_u64().unwrap();
        if seq == 0 {
            prev = v["prev"].as_str().unwrap().to_owned();
        }
        let new_line = if v["type"] == "checkpoint" {
            let (ts, records) = (v["ts"].as_u64().unwrap(), v["records"].as_u64().unwrap());
            let sig = key.sign(chain::checkpoint_message(seq, &prev, ts, records).as_bytes());
            let sig = base64::engine::general_purpose::STANDARD.encode(sig.to_bytes());
            chain::checkpoint_line(seq, &prev, ts, records, &sig)
        } else {
            if v.get("text")
                .and_then(Value::as_str)
                .is_some_and(|t| t.starts_with("SELECT"))
            {
                v.insert("text".into(), Value::String("SELECT 'x'".into()));
                changed += 1;
            }
            v.remove("seq");
            v.remove("prev");
            let body = serde_json::to_vec(&Value::Object(v)).unwrap();
            let mut l = Vec::new();
            chain::line(seq, prev.as_bytes(), &body, &mut l);
            l
        };
        prev = chain::hash_hex(&new_line);
        out.extend_from_slice(&new_line);
        out.push(b'\n');
    }
    std::fs::write(segment, out).unwrap();
    let public = key
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    std::fs::write(audit.join("signing.pub"), public).unwrap();
    changed
}

/// Strict durability, killed at arbitrary moments under load, three times
/// over: every result a client received, and every write a client saw
/// answered, has its command record on disk. Reads go upstream before their
/// record is durable (the flush overlaps the query), so this is what proves
/// their results still wait for it.
#[test]
fn strict_never_delivers_a_result_or_answers_a_write_without_its_record() {
    let s = setup("strict");
    s.pg.psql("CREATE TABLE kills (id text)");
    // A SELECT that writes: what the statement's text cannot show.
    s.pg.psql(
        "CREATE FUNCTION lower(x text, y text) RETURNS text LANGUAGE sql AS \
         $$ INSERT INTO kills VALUES (x) RETURNING x $$",
    );
    // A database whose sessions the server keeps read-only: there reads go
    // upstream ahead of their records (their results still wait).
    s.pg.psql("CREATE DATABASE ro");
    // An attacker there: a view turns the read-only setting off for the
    // next transaction, a write hides behind an operator, and both go in
    // one packet, so the second is judged before the server has said the
    // session is no longer read-only.
    psql(
        s.pg.addr(),
        "ro",
        "CREATE TABLE sneaks (id text); \
         CREATE FUNCTION sneak(x text, y text) RETURNS boolean LANGUAGE sql AS \
         $$ INSERT INTO sneaks VALUES (x) RETURNING true $$; \
         CREATE OPERATOR === (leftarg = text, rightarg = text, function = sneak); \
         CREATE VIEW flip AS SELECT set_config('default_transaction_read_only', 'off', false); \
         CREATE VIEW flop AS SELECT set_config('default_transaction_read_only', 'on', false);",
    )
    .unwrap();
    s.pg.psql("ALTER DATABASE ro SET default_transaction_read_only = on");
    let cfg = std::fs::read_to_string(&s.sluice.config_path).unwrap();
    let mut gateway = Some(s.sluice);
    let mut seen: Vec<String> = Vec::new();
    for round in 0..3 {
        let g = match gateway.take() {
            Some(g) => g,
            None => Sluice::start(&cfg),
        };
        let clients: Vec<_> = (0..8)
            .map(|n| {
                let (addr, t) = (s.addr, s.keys.token("loader", &["agents"]));
                std::thread::spawn(move || {
                    let mut saw = Vec::new();
                    if n >= 6 {
                        let (_, mut c) = RawPg::start(addr, &t, &[("database", "ro")]);
                        for i in 0..1_000_000 {
                            let text = format!("SELECT 'sneak-{round}-{n}-{i}' === ''");
                            let mut out = Vec::new();
                            encode::query(&mut out, b"SELECT * FROM flip");
                            encode::query(&mut out, text.as_bytes());
                            encode::query(&mut out, b"SELECT * FROM flop");
                            let Some(got) = c.try_exchange(&out, 3) else {
                                break;
                            };
                            if got.iter().any(|(t, _)| *t == b'D') {
                                saw.push(text);
                            }
                        }
                        return saw;
                    }
                    let db = if n % 3 == 0 { "ro" } else { "postgres" };
                    let Ok(mut c) = connect(addr, &t, db) else {
                        return saw;
                    };
                    for i in 0..1_000_000 {
                        let text = match n % 3 {
                            0 => format!("SELECT 'read-{round}-{n}-{i}'"),
                            1 => format!("INSERT INTO kills VALUES ('write-{round}-{n}-{i}')"),
                            _ => format!("SELECT public.lower('call-{round}-{n}-{i}', '')"),
                        };
                        if c.batch_execute(&text).is_err() {
                            break;
                        }
                        saw.push(text);
                    }
                    saw
                })
            })
            .collect();
        // A different moment each round.
        std::thread::sleep(Duration::from_millis(700 + 311 * round));
        g.signal(libc::SIGKILL);
        drop(g);
        for c in clients {
            seen.extend(c.join().unwrap());
        }
    }
    assert!(seen.len() > 100, "the load ran: {} answers", seen.len());
    let recorded: std::collections::HashSet<String> = records_lenient(&s.audit)
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect();
    for text in &seen {
        assert!(
            recorded.contains(text),
            "answered without a durable record: {text}"
        );
    }
    // Every row a statement wrote has its statement's record, answered or
    // not: nothing that writes went upstream before its record.
    let quoted: std::collections::HashSet<&str> = recorded
        .iter()
        .filter_map(|t| t.split('\'').nth(1))
        .collect();
    let sneaked = psql(s.pg.addr(), "ro", "SELECT id FROM sneaks").unwrap();
    assert!(!sneaked.trim().is_empty(), "the attacker's writes ran");
    let rows = s.pg.psql("SELECT id FROM kills") + "\n" + &sneaked;
    for id in rows.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(
            quoted.contains(id),
            "a row was written with no record of its statement: {id}"
        );
    }
    // And the log, sealed on the next start, verifies.
    let _last = Sluice::start(&cfg);
    let (code, out, err) = cli(&["audit", "verify", "--dir", s.audit.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stopped without closing the log"), "{out}");
}

/// Strict durability against a transaction block begun read-write: a view
/// then turns the session's default read-only (the server reports it), but
/// the open block stays read-write, so a statement in it must not go
/// upstream ahead of its record. The hidden effect is `setval`, which no
/// rollback undoes; killed at arbitrary moments, the last value set must
/// always belong to a recorded statement.
#[test]
fn strict_does_not_read_a_read_write_block_as_read_only() {
    let s = setup("strict");
    s.pg.psql(
        "CREATE SEQUENCE sneak_0; CREATE SEQUENCE sneak_1; CREATE SEQUENCE sneak_2; \
         CREATE FUNCTION sneak(x text, y text) RETURNS boolean LANGUAGE sql AS \
         $$ SELECT setval(y::regclass, x::bigint) > 0 $$; \
         CREATE OPERATOR === (leftarg = text, rightarg = text, function = sneak); \
         CREATE VIEW ro_on AS SELECT set_config('default_transaction_read_only', 'on', false); \
         CREATE VIEW ro_off AS SELECT set_config('default_transaction_read_only', 'off', false);",
    );
    let cfg = std::fs::read_to_string(&s.sluice.config_path).unwrap();
    let mut gateway = Some(s.sluice);
    for round in 0..4u64 {
        let g = match gateway.take() {
            Some(g) => g,
            None => Sluice::start(&cfg),
        };
        // Others keep the log flushing, as on a busy gateway: a record
        // waits for the flush in progress before its own.
        let others: Vec<_> = (0..3)
            .map(|_| {
                let (addr, t) = (s.addr, s.keys.token("loader", &["agents"]));
                std::thread::spawn(move || {
                    let Ok(mut c) = connect(addr, &t, "postgres") else {
                        return;
                    };
                    while c.batch_execute("SELECT 1").is_ok() {}
                })
            })
            .collect();
        let attackers: Vec<_> = (0..3u64)
            .map(|n| {
                let (addr, t) = (s.addr, s.keys.token("loader", &["agents"]));
                std::thread::spawn(move || {
                    let (_, mut c) = RawPg::start(addr, &t, &[]);
                    for block in 0..100_000u64 {
                        // Most of the time goes to the hidden statements.
                        let sneaks = (0..30).map(|i| {
                            let value = (round * 10 + n) * 10_000_000 + block * 100 + i + 1;
                            format!("SELECT '{value}' === 'sneak_{n}'")
                        });
                        let steps = ["BEGIN".to_owned(), "SELECT * FROM ro_on".to_owned()]
                            .into_iter()
                            .chain(sneaks)
                            .chain(["ROLLBACK".to_owned(), "SELECT * FROM ro_off".to_owned()]);
                        for step in steps {
                            let mut out = Vec::new();
                            encode::query(&mut out, step.as_bytes());
                            if c.try_exchange(&out, 1).is_none() {
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(600 + 257 * round));
        g.signal(libc::SIGKILL);
        drop(g);
        for t in attackers.into_iter().chain(others) {
            t.join().unwrap();
        }
        let recorded = records_lenient(&s.audit).join("\n");
        for n in 0..3 {
            let last = s.pg.psql(&format!("SELECT last_value FROM sneak_{n}"));
            let last = last.trim();
            if last == "1" {
                continue;
            }
            assert!(
                recorded.contains(&format!("SELECT '{last}' === 'sneak_{n}'")),
                "round {round}: sneak_{n} was set to {last} by a statement with no durable record"
            );
        }
    }
}

/// A crash right after a rotation leaves a segment with no record (nothing,
/// or only the fill): the next start drops it and the chain goes on.
#[test]
fn an_empty_last_segment_does_not_restart_the_chain() {
    let s = setup("batched");
    let t = s.keys.token("alice", &["sre"]);
    connect(s.addr, &t, "postgres")
        .unwrap()
        .batch_execute("SELECT 1")
        .unwrap();
    let cfg = std::fs::read_to_string(&s.sluice.config_path).unwrap();
    let Setup {
        mut sluice, audit, ..
    } = s;
    stop(&mut sluice);
    let next = records(&audit).last().unwrap()["seq"].as_u64().unwrap() + 1;
    let empty = audit.join(sluice::audit::chain::segment_name(next));
    std::fs::write(&empty, vec![b' '; 4096]).unwrap();
    let mut again = Sluice::start(&cfg);
    connect(s.addr, &t, "postgres")
        .unwrap()
        .batch_execute("SELECT 2")
        .unwrap();
    stop(&mut again);
    let (code, out, err) = cli(&["audit", "verify", "--dir", audit.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let seqs: Vec<u64> = records(&audit)
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

/// `audit tail -f` on a live log (strict: filled ahead of its records) prints each
/// new record as it is written.
#[test]
fn tail_follows_a_live_log() {
    let s = setup("strict");
    let t = s.keys.token("alice", &["sre"]);
    let mut c = connect(s.addr, &t, "postgres").unwrap();
    c.batch_execute("SELECT 'before'").unwrap();
    // The first batch is on disk.
    assert!(
        wait_for(Duration::from_secs(10), || records_lenient(&s.audit)
            .iter()
            .any(|l| l.contains("before"))
            .then_some(()))
        .is_some()
    );
    let mut tail = std::process::Command::new(sluice_bin())
        .args([
            "audit",
            "tail",
            "-f",
            "-n",
            "1000",
            "--dir",
            s.audit.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = tail.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("after-3") {
                break;
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    for i in 0..4 {
        c.batch_execute(&format!("SELECT 'after-{i}'")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = wait_for(Duration::from_secs(15), || {
        reader.is_finished().then_some(())
    });
    let _ = tail.kill();
    let _ = tail.wait();
    assert!(
        seen.is_some(),
        "tail -f did not print the new records in time"
    );
    let text = reader.join().unwrap();
    for i in 0..4 {
        assert!(text.contains(&format!("after-{i}")), "{text}");
    }
    assert!(text.contains("before"), "{text}");
    assert!(!text.contains("    "), "no fill is printed");
}
