//! `sluice demo` runs, and every command its walkthrough prints works as printed.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::*;

/// Runs one printed command line with bash; returns (status ok, stdout, stderr).
fn sh(line: &str) -> (bool, String, String) {
    let o = Command::new("bash").arg("-c").arg(line).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

#[test]
fn the_printed_walkthrough_works_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut demo = Command::new(sluice_bin());
    demo.args(["demo", "--any-ports", "--dir"]).arg(&state);
    walkthrough(demo, &state);
}

/// A newcomer's first run: the default state directory inside a home that
/// only its owner may enter (root's is 0700), which the server's own user
/// cannot reach.
#[test]
fn the_demo_runs_from_a_private_home_directory() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut demo = Command::new(sluice_bin());
    demo.args(["demo", "--any-ports"]).current_dir(home.path());
    walkthrough(demo, &home.path().join("sluice-demo"));
}

fn walkthrough(mut demo: Command, state: &std::path::Path) {
    let mut child = demo
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pg_dir = std::env::temp_dir().join(format!("sluice-demo-pg-{}", child.id()));
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let demo = Demo(child);
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("demo: {l}");
        }
    });
    // Collect the printed commands (lines starting with "  $ ").
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut commands = Vec::new();
    let mut headings = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the demo prints its walkthrough");
        assert!(
            !line.contains("skipped"),
            "the whole walkthrough runs: {line}"
        );
        if let Some((n, _)) = line.split_once(". ") {
            if let Ok(n) = n.parse::<u32>() {
                headings.push(n);
            }
        }
        if let Some(cmd) = line.strip_prefix("  $ ") {
            commands.push(cmd.to_owned());
            if cmd.contains("audit verify") {
                break;
            }
        }
    }
    assert_eq!(commands.len(), 18, "{commands:#?}");
    assert_eq!(headings, [1, 2, 3, 4, 5, 6, 7], "all seven parts, numbered");
    assert!(
        pg_dir.is_dir(),
        "the throw-away cluster is under the temp dir"
    );
    // The gateway is up once its admin API answers.
    let admin: std::net::SocketAddr = commands[3]
        .split("--admin http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let up = wait_for(Duration::from_secs(30), || {
        std::net::TcpStream::connect(admin).ok()?;
        (http_get(admin, "/healthz").0 == 200).then_some(())
    });
    assert!(up.is_some(), "the gateway came up");

    // 1. Masked query results.
    let (ok, out, err) = sh(&commands[0]);
    assert!(ok, "{err}");
    assert!(
        out.contains("j*******@*******.com")
            && out.contains("**** **** **** 1111")
            && out.contains("***-**-****"),
        "{out}"
    );
    assert!(
        !out.contains("jane.roe@example.com") && !out.contains("536-22-8741"),
        "{out}"
    );
    // 2. DROP TABLE blocked.
    let (ok, _, err) = sh(&commands[1]);
    assert!(
        !ok && err.contains("ERROR:  DROP and TRUNCATE are blocked on production"),
        "{err}"
    );
    // 3. DELETE waits; the approver lists and approves; the DELETE runs.
    let delete = {
        let c = commands[2].clone();
        std::thread::spawn(move || sh(&c))
    };
    let listed = wait_for(Duration::from_secs(20), || {
        let (_, out, _) = sh(&commands[3]);
        out.contains("DELETE FROM orders WHERE id = 1")
            .then_some(out)
    });
    assert!(listed.is_some(), "the request is listed");
    let (ok, out, err) = sh(&commands[4]);
    assert!(ok && out.trim() == "approval 1: approved", "{out}{err}");
    let (ok, out, err) = delete.join().unwrap();
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "DELETE 1");
    assert!(
        err.contains("approval 1 requested for DELETE on customers-db"),
        "{err}"
    );
    // 4. HTTP: masked JSON; a held DELETE (202), approved, then run once.
    let (ok, out, _) = sh(&commands[5]);
    assert!(
        ok && out.contains("\"email\":\"j*******@*******.com\"")
            && out.contains("**** **** **** 1111"),
        "{out}"
    );
    assert!(!out.contains("jane.roe@example.com"), "{out}");
    let (_, out, _) = sh(&commands[6]);
    assert!(
        out.contains("\"approval\":2") && out.contains("\"status\":\"pending\""),
        "{out}"
    );
    let (ok, out, err) = sh(&commands[7]);
    assert!(ok && out.trim() == "approval 2: approved", "{out}{err}");
    let (_, out, _) = sh(&commands[8]);
    assert_eq!(out, r#"{"deleted":2}"#);
    // The customer is gone from the API.
    let (_, out, _) = sh(&commands[5]);
    assert!(!out.contains("\"id\":2,"), "{out}");
    // 5. SSH: a command runs; rm -rf never reaches the host; rm waits for a
    // second person, then runs once.
    let (ok, out, err) = sh(&commands[9]);
    assert!(ok && out.contains("load average"), "{out}{err}");
    let host = commands[10]
        .split("'rm -rf ")
        .nth(1)
        .and_then(|r| r.strip_suffix('\''))
        .unwrap()
        .to_owned();
    let (ok, _, err) = sh(&commands[10]);
    assert!(!ok && err.contains("sluice: "), "{err}");
    assert!(
        std::path::Path::new(&host).is_dir(),
        "nothing ran on the host"
    );
    let rm = {
        let c = commands[11].clone();
        std::thread::spawn(move || sh(&c))
    };
    let listed = wait_for(Duration::from_secs(20), || {
        let (_, out, _) = sh(&commands[3]);
        out.contains("old.log").then_some(out)
    });
    assert!(listed.is_some(), "the held rm is listed");
    let (ok, out, err) = sh(&commands[12]);
    assert!(ok && out.trim() == "approval 3: approved", "{out}{err}");
    let (ok, _, err) = rm.join().unwrap();
    assert!(ok, "{err}");
    assert!(!std::path::Path::new(&host).join("old.log").exists());
    // 6. A shell session, recorded and replayed.
    let (ok, out, err) = sh(&format!(
        "printf 'echo from-demo-shell\\nexit\\n' | {}",
        commands[13]
    ));
    assert!(ok && out.contains("from-demo-shell"), "{out}{err}");
    let (ok, out, err) = sh(&commands[14]);
    assert!(ok && !out.trim().is_empty(), "{out}{err}");
    let (ok, out, err) = sh(&commands[15]);
    assert!(ok && out.contains("from-demo-shell"), "{out}{err}");
    // 7. The audit log has it all and verifies.
    let (ok, out, err) = sh(&commands[16]);
    assert!(ok, "{err}");
    for needle in [
        "DROP TABLE orders",
        "DELETE FROM orders WHERE id = 1",
        "/v1/customers/2",
        "rm -rf ",
        "old.log",
    ] {
        assert!(
            out.contains(needle),
            "audit search shows {needle:?}:\n{out}"
        );
    }
    // A held HTTP request's record says why in words, not as an escaped reply.
    assert!(!out.contains(r#"\"status\""#), "{out}");
    assert!(out.contains("approval 2 requested for"), "{out}");
    let (ok, out, err) = sh(&commands[17]);
    assert!(ok && out.starts_with("ok: "), "{out}{err}");
    // One vocabulary: every field of every record the walkthrough made (all
    // three protocols, approvals, recordings) is a column of the CSV export.
    let audit = state.join("audit");
    let (ok, csv, err) = sh(&format!(
        "{} audit export --format csv --dir {}",
        sluice_bin(),
        audit.display()
    ));
    assert!(ok, "{err}");
    let columns: std::collections::HashSet<&str> =
        csv.lines().next().unwrap_or_default().split(',').collect();
    let mut fields = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&audit).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "log") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if let Ok(serde_json::Value::Object(record)) = serde_json::from_str(line) {
                fields.extend(record.keys().cloned());
            }
        }
    }
    assert!(fields.len() > 20, "{fields:?}");
    let missing: Vec<_> = fields
        .iter()
        .filter(|f| !columns.contains(f.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "fields without a CSV column: {missing:?}"
    );

    // Ctrl-C stops everything; the state directory stays.
    drop(demo);
    assert!(state.join("audit").is_dir() && state.join("demo.toml").is_file());
    assert!(!pg_dir.exists(), "the throw-away cluster is removed");
    let (ok, out, err) = sh(&format!(
        "{} audit verify --dir {}",
        sluice_bin(),
        state.join("audit").display()
    ));
    assert!(ok, "a clean stop seals the log: {out}{err}");
}
