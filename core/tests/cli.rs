//! `sluice check`, `--help`, `--version`, and the example configs.

mod support;

use std::process::Command;

use support::sluice_bin;

fn sluice(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(sluice_bin())
        .args(args)
        .env("ORDERS_PASSWORD", "example")
        .env("API_TOKEN", "example")
        .output()
        .expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn examples() -> Vec<std::path::PathBuf> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("config/examples")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_config_checks_ok() {
    let examples = examples();
    assert!(!examples.is_empty());
    for path in examples {
        let (code, out, err) = sluice(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {out}{err}", path.display());
        assert!(out.contains(": ok"), "{out}");
        assert!(out.contains("target "), "{out}");
        assert!(!err.contains("warning"), "the examples are secure: {err}");
    }
}

#[test]
fn check_warns_when_guardrails_leave_opaque_code_or_program_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    let config = |rules: &str| {
        format!("[identity]\nissuer = \"x\"\naudience = \"y\"\njwks = \"file:j\"\n[[target]]\nname = \"t\"\nprotocol = \"postgres\"\nlisten = \"127.0.0.1:1\"\nupstream = \"h:1\"\naccess = [\"a\"]\nguardrails = \"g\"\n[guardrails.g]\nrules = [{rules}]\n")
    };
    std::fs::write(&path, config(r#"{ kinds = ["drop"], action = "deny" }, { kinds = ["program"], groups = ["a"], action = "allow" }"#)).unwrap();
    let (code, _, err) = sluice(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: target `t`: its guardrails allow code Sluice cannot see"),
        "{err}"
    );
    assert!(err.contains("a rule allows COPY ... PROGRAM"), "{err}");
    std::fs::write(
        &path,
        config(r#"{ kinds = ["opaque"], action = "approve", approvers = ["b"] }"#),
    )
    .unwrap();
    let (code, _, err) = sluice(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn a_broken_config_lists_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "[gateway]\nshards = 2\n\n[[target]]\nname = \"db\"\nprotocol = \"tcp\"\nlisten = \"127.0.0.1\"\nupstream = \"nowhere\"\naccess = [\"sre\"]\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let (code, out, err) = sluice(&["check", "--config", p]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("{p}:7:10: invalid listen address `127.0.0.1`")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:8:12: invalid upstream `nowhere`")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:9:10: tcp target `db` cannot check identity")),
        "{err}"
    );
    assert!(err.contains(&format!("{p}: 3 errors")), "{err}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let (code, _, err) = sluice(&["check", "--config", "/nonexistent/sluice.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/sluice.toml: cannot read: No such file"),
        "{err}"
    );
}

#[test]
fn help_and_version() {
    let (code, out, _) = sluice(&["--help"]);
    assert_eq!(code, 0);
    for word in ["serve", "check", "access gateway"] {
        assert!(out.contains(word), "{out}");
    }
    let (code, out, _) = sluice(&["serve", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("SIGHUP") && out.contains("--config"), "{out}");
    let (code, out, _) = sluice(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("sluice {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_reports_what_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hash.toml");
    std::fs::write(
        &path,
        "[identity]\nissuer = \"x\"\naudience = \"y\"\njwks = \"file:j\"\n[[target]]\nname = \"t\"\nprotocol = \"postgres\"\nlisten = \"127.0.0.1:1\"\nupstream = \"h:1\"\naccess = [\"a\"]\nmasking = \"m\"\n[masking.m]\ncolumns = { ssn = \"hash\" }\n",
    )
    .unwrap();
    let (code, _, err) = sluice(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("hash.toml:13:19: the `hash` style needs `hash_key_env`"),
        "{err}"
    );
}

/// Every command's output can go into `head -1` (or any pipe closed early):
/// the command ends quietly, never with a panic about a broken pipe.
#[test]
fn every_command_ends_quietly_on_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    // A summary far larger than a pipe's buffer.
    let mut big = String::new();
    for i in 0..3000 {
        big.push_str(&format!(
            "[[target]]\nname = \"t{i}\"\nprotocol = \"tcp\"\nlisten = \"127.0.0.1:{}\"\nupstream = \"127.0.0.1:1\"\naccess = [\"*\"]\n",
            20000 + i
        ));
    }
    let config = dir.path().join("big.toml");
    std::fs::write(&config, big).unwrap();
    let (code, _, _) = sluice(&["token", "keygen", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    let key = dir.path().join("dev.key.pem");
    // A real audit log with a few hundred records, cleanly sealed.
    let audit = dir.path().join("audit");
    let listen = support::free_addr();
    let mut gw = support::Sluice::start(&format!(
        "[audit]\ndir = \"{}\"\ndurability = \"batched\"\n\n{}",
        audit.display(),
        support::tcp_target("t", listen, support::echo_server())
    ));
    for _ in 0..200 {
        drop(std::net::TcpStream::connect(listen).unwrap());
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit(std::time::Duration::from_secs(20)).is_some());
    let bin = sluice_bin();
    for args in [
        format!("check --config {}", config.display()),
        "--help".to_owned(),
        "--version".to_owned(),
        format!("token keygen --out {}", dir.path().join("k2").display()),
        format!("token mint --key {} --sub a --iss x", key.display()),
        format!("audit verify --dir {}", audit.display()),
        format!("audit search --dir {}", audit.display()),
        format!("audit export --dir {} --format csv", audit.display()),
        format!("audit tail --dir {}", audit.display()),
    ] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{bin} {args} | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}"
            ))
            .output()
            .unwrap();
        let status: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(status, 0 | 141) && !err.contains("panicked") && !err.contains("Broken pipe"),
            "sluice {args}: status {status}: {err}"
        );
    }
}

/// The dev key is PKCS#8 v1, which other tools read to mint tokens too.
#[test]
fn the_dev_key_is_readable_by_openssl() {
    let Some(openssl) = support::which("openssl") else {
        panic!("openssl is not installed (test.sh installs it)");
    };
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = sluice(&["token", "keygen", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let out = Command::new(openssl)
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(dir.path().join("dev.key.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ED25519"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A gateway stopped before anything happened leaves a log that verifies.
#[test]
fn an_empty_cleanly_stopped_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let mut gw = support::Sluice::start(&format!(
        "[audit]\ndir = \"{}\"\n\n{}",
        audit.display(),
        support::tcp_target("t", support::free_addr(), support::echo_server())
    ));
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit(std::time::Duration::from_secs(20)).is_some());
    let (code, out, err) = sluice(&["audit", "verify", "--dir", audit.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: "), "{out}");
    assert!(!err.contains(": :"), "{err}");
}
