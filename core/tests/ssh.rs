//! SSH targets end to end: a throw-away OpenSSH `sshd` (own host key, a
//! generated client key in `authorized_keys`, a free port), the real `ssh`,
//! `sftp` and `sshpass` clients, and the real `sluice` binary between them.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use support::pg::Keys;
use support::*;

/// A throw-away sshd on a free loopback port, logging in the current user
/// with a key this harness generated.
struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(ok.success());
}

fn user() -> String {
    String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned()
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            // sshd started as root wants its privilege separation directory.
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
             UsePAM no\nSubsystem sftp internal-sftp\nMaxStartups 300\nMaxSessions 300\nLogLevel ERROR\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sshd (openssh-server) is installed; ./test.sh installs it");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_for(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .ok())
            .is_some(),
            "sshd did not start"
        );
        Sshd { child, port, dir }
    }

    fn host_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_key.pub"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    sshd: Sshd,
    keys: Keys,
    sluice: Sluice,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    audit: PathBuf,
    work: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

fn setup(guardrails: &str, extra_targets: &str) -> Setup {
    setup_with(guardrails, extra_targets, "", "")
}

/// `target_extra`: more settings of the `web1` target; `sections`: more of
/// the file (masking profiles), where leading `[identity]` and `[audit]`
/// tables add to those tables. In `extra_targets`, `{SSHD_PORT}` is the
/// sshd's port and `{KNOWN_HOSTS}` a known_hosts file with its host key.
fn setup_with(guardrails: &str, extra_targets: &str, target_extra: &str, sections: &str) -> Setup {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_key()),
    )
    .unwrap();
    let extra_targets = &extra_targets
        .replace("{SSHD_PORT}", &sshd.port.to_string())
        .replace("{CLIENT_KEY}", &sshd.client_key().display().to_string())
        .replace("{KNOWN_HOSTS}", &known_hosts.display().to_string());
    let keys = Keys::new(dir.path());
    let (addr, admin) = (free_addr(), free_addr());
    let audit = dir.path().join("audit");
    let (identity_extra, sections) = table(sections, "identity");
    let (audit_extra, sections) = table(sections, "audit");
    let config = format!(
        "[gateway]\nshards = 1\nadmin = \"{admin}\"\n{identity}admin_groups = [\"platform\"]\n{identity_extra}\n\
         [audit]\ndir = \"{audit}\"\ndurability = \"strict\"\n{audit_extra}\n\
         [[target]]\nname = \"web1\"\nprotocol = \"ssh\"\nlisten = \"{addr}\"\nupstream = \"127.0.0.1:{port}\"\n\
         upstream_host_key = \"{host_key}\"\ncredentials = {{ user = \"{user}\", key_file = \"{key}\" }}\n\
         access = [\"agents\"]\napprovers = [\"leads\"]\nguardrails = \"web\"\n{target_extra}\n{extra_targets}\n\
         [guardrails.web]\n{guardrails}\n{sections}",
        identity = keys.identity_block(),
        audit = audit.display(),
        port = sshd.port,
        host_key = sshd.host_key(),
        user = user(),
        key = sshd.client_key().display(),
    );
    let sluice = Sluice::start(&config);
    Setup {
        sshd,
        keys,
        sluice,
        addr,
        admin,
        audit,
        work: tempfile::tempdir().unwrap(),
        _dir: dir,
    }
}

/// A leading `[NAME]` table of `sections`: its settings, and the rest.
fn table<'a>(sections: &'a str, name: &str) -> (&'a str, &'a str) {
    match sections.strip_prefix(&format!("[{name}]\n")) {
        Some(rest) => match rest.find("\n[") {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        },
        None => ("", sections),
    }
}

const RULES: &str = r#"rules = [
  { commands = ["rm *", "shutdown*"], action = "deny", message = "destructive commands are blocked" },
  { commands = ["touch *"], action = "approve" },
]
shell = "allow"
"#;

impl Setup {
    fn token(&self, sub: &str) -> String {
        self.keys.token(sub, &["agents"])
    }

    /// `sshpass -p TOKEN ssh ... ARGS` through the gateway.
    fn ssh(&self, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
        self.ssh_to(self.addr, token, args, stdin)
    }

    fn ssh_to(
        &self,
        addr: std::net::SocketAddr,
        token: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Output {
        let mut cmd = Command::new("sshpass");
        cmd.arg("-p")
            .arg(token)
            .arg("ssh")
            .args(ssh_options(addr))
            .args(args);
        run(cmd, stdin)
    }
}

fn ssh_options(addr: std::net::SocketAddr) -> Vec<String> {
    vec![
        "-p".into(),
        addr.port().to_string(),
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-o".into(),
        "PubkeyAuthentication=no".into(),
        "-o".into(),
        "PreferredAuthentications=password,keyboard-interactive".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
        format!("anyone@{}", addr.ip()),
    ]
}

fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("sshpass and ssh are installed; ./test.sh installs them");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut w = child.stdin.take().unwrap();
        w.write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every record of the audit log (live segments may end in fill).
fn records(audit: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(audit)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            if line.trim().is_empty() {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                out.push(v);
            }
        }
    }
    out
}

fn wait_record(audit: &Path, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    wait_for(Duration::from_secs(10), || {
        records(audit).into_iter().find(|r| f(r))
    })
    .expect("the record reached the audit log")
}

#[test]
fn exec_runs_with_the_injected_key_and_denied_commands_never_reach_the_host() {
    let s = setup(RULES, "");
    let token = s.token("alice");

    // Keyboard-interactive asks for the token in a prompt sshpass answers.
    let mut cmd = Command::new("sshpass");
    let mut opts = ssh_options(s.addr);
    let host = opts.pop().unwrap();
    cmd.arg("-p").arg(&token).arg("ssh").args(&opts).args([
        "-o",
        "PreferredAuthentications=keyboard-interactive",
        &host,
        "echo via-prompt",
    ]);
    let o = run(cmd, None);
    assert_eq!(text(&o.stdout), "via-prompt\n", "{}", text(&o.stderr));

    // Output, stderr and the exit status come back as from the host itself.
    let o = s.ssh(&token, &["echo out; echo err >&2; exit 3"], None);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "out\n");
    assert!(text(&o.stderr).contains("err"));
    // stdin is piped through.
    let o = s.ssh(&token, &["tr a-z A-Z"], Some("hello through sluice\n"));
    assert_eq!(
        text(&o.stdout),
        "HELLO THROUGH SLUICE\n",
        "{}",
        text(&o.stderr)
    );

    // A denied command: a clear message, status 126, the file untouched.
    let victim = s.work.path().join("keep-me");
    std::fs::write(&victim, "x").unwrap();
    for line in [
        format!("rm -f {}", victim.display()),
        format!("true;  /bin/rm -f {}", victim.display()),
        format!("sh -c 'r''m -f {}'", victim.display()),
        format!("X=1 sudo -- rm -f {}", victim.display()),
    ] {
        let o = s.ssh(&token, &[&line], None);
        assert_eq!(o.status.code(), Some(126), "{line}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("sluice: destructive commands are blocked"),
            "{line}: {}",
            text(&o.stderr)
        );
        assert!(victim.exists(), "{line} reached the host");
    }
    // A line the gateway cannot read is refused where rules deny commands.
    let o = s.ssh(&token, &["$(echo rm) -f /tmp/nothing"], None);
    assert_eq!(o.status.code(), Some(126));
    assert!(
        text(&o.stderr).contains("cannot be judged"),
        "{}",
        text(&o.stderr)
    );

    // Every command is in the audit log, with its decision.
    let denied = wait_record(&s.audit, |r| {
        r["type"] == "command" && r["protocol"] == "ssh" && r["decision"] == "deny"
    });
    assert_eq!(denied["subject"], "alice");
    wait_record(&s.audit, |r| {
        r["type"] == "command"
            && r["decision"] == "allow"
            && r["text"].as_str().is_some_and(|t| t.contains("exit 3"))
    });
    // /metrics counts the target's SSH connections and requests by decision.
    let (status, page) = http_get(s.admin, "/metrics");
    assert_eq!(status, 200);
    for series in [
        "sluice_ssh_requests_total{target=\"web1\",request=\"exec\",decision=\"deny\"}",
        "sluice_ssh_requests_total{target=\"web1\",request=\"exec\",decision=\"allow\"}",
        "sluice_ssh_connections_total{target=\"web1\"}",
        "sluice_ssh_bytes_total{target=\"web1\",direction=\"upstream_to_client\"}",
    ] {
        assert!(page.contains(series), "{series} in\n{page}");
    }
}

#[test]
fn a_refused_token_a_forward_and_a_wrong_host_key_are_refused() {
    let wrong = free_addr();
    let s = setup(
        RULES,
        &format!(
            "[[target]]\nname = \"impostor\"\nprotocol = \"ssh\"\nlisten = \"{wrong}\"\nupstream = \"127.0.0.1:{{PORT}}\"\n\
             upstream_host_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOf3vEtSlyF30sj5rBqxHhxG6yY2e+bLbhUvGrYVGDbB\"\n\
             credentials = {{ user = \"nobody\", key_file = \"/nonexistent\" }}\naccess = [\"agents\"]\n"
        )
        .replace("{PORT}", "{SSHD_PORT}"),
    );
    // A token that does not verify: asked again, no session (sshpass exits
    // 5 when the password it gave is refused).
    let o = s.ssh("not-a-token", &["echo ran"], None);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    assert!(text(&o.stdout).is_empty());
    // A token of a group without access: no session either.
    let o = s.ssh(&s.keys.token("eve", &["interns"]), &["echo ran"], None);
    assert_eq!(o.status.code(), Some(5));
    assert!(text(&o.stdout).is_empty());
    wait_record(&s.audit, |r| {
        r["type"] == "auth_failure" && r["protocol"] == "ssh"
    });
    wait_record(&s.audit, |r| {
        r["type"] == "access_denied" && r["subject"] == "eve"
    });

    // Port forwarding (`-W` opens a direct-tcpip channel) is refused.
    let token = s.token("alice");
    let target = format!("127.0.0.1:{}", s.sshd.port);
    let o = s.ssh(&token, &["-W", &target], Some(""));
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("forwarding failed")
            || text(&o.stderr).contains("administratively prohibited"),
        "{}",
        text(&o.stderr)
    );
    wait_record(&s.audit, |r| {
        r["request"] == "forward" && r["text"] == target.as_str() && r["decision"] == "deny"
    });

    // sftp is off unless the guardrails allow it.
    let mut cmd = Command::new("sshpass");
    cmd.arg("-p").arg(&token).arg("sftp");
    let mut opts = ssh_options(s.addr);
    let host = opts.pop().unwrap();
    opts[0] = "-P".into();
    cmd.args(&opts).arg(host);
    let o = run(cmd, Some("ls\n"));
    assert_ne!(o.status.code(), Some(0), "sftp must be refused");
    wait_record(&s.audit, |r| {
        r["request"] == "sftp" && r["text"] == "subsystem sftp" && r["decision"] == "deny"
    });

    // An upstream whose host key is not the pinned one is never used.
    let o = s.ssh_to(wrong, &token, &["true"], None);
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("target `impostor` is unavailable"));
    assert!(
        s.sluice
            .wait_log("is not the pinned one", Duration::from_secs(5)),
        "{}",
        s.sluice.logs()
    );
}

#[test]
fn sftp_runs_where_the_guardrails_allow_it() {
    let s = setup(&format!("{RULES}sftp = \"allow\"\n"), "");
    let file = s.work.path().join("listed.txt");
    std::fs::write(&file, "x").unwrap();
    let mut cmd = Command::new("sshpass");
    // Commands on stdin (`-b` would turn password logins off).
    cmd.arg("-p").arg(s.token("alice")).arg("sftp");
    let mut opts = ssh_options(s.addr);
    let host = opts.pop().unwrap();
    opts[0] = "-P".into();
    cmd.args(&opts).arg(host);
    let o = run(cmd, Some(&format!("ls {}\n", s.work.path().display())));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("listed.txt"),
        "{}",
        text(&o.stdout)
    );
    wait_record(&s.audit, |r| {
        r["type"] == "command" && r["request"] == "sftp" && r["decision"] == "allow"
    });
}

#[test]
fn a_held_command_runs_once_after_a_second_person_approves() {
    let s = setup(RULES, "");
    let marker = s.work.path().join("approved");
    let line = format!("touch {}", marker.display());
    let token = s.token("alice");
    let (addr, line2) = (s.addr, line.clone());
    let waiting = std::thread::spawn(move || {
        let mut cmd = Command::new("sshpass");
        cmd.arg("-p")
            .arg(&token)
            .arg("ssh")
            .args([
                "-o",
                "SetEnv=SLUICE_REASON=\"restart after the config change\"",
            ])
            .args(ssh_options(addr))
            .arg(&line2);
        run(cmd, None)
    });
    let request = wait_record(&s.audit, |r| {
        r["type"] == "approval" && r["action"] == "requested"
    });
    let id = request["approval"].as_u64().unwrap();
    assert_eq!(
        request["justification"], "restart after the config change",
        "{request}"
    );
    assert!(!marker.exists(), "nothing runs before the approval");
    // The requester cannot approve their own command.
    let own = Command::new(sluice_bin())
        .args(["approvals", "approve", &id.to_string(), "--admin"])
        .arg(format!("http://{}", s.admin))
        .args(["--token", &s.keys.token("alice", &["leads"])])
        .output()
        .unwrap();
    assert!(!own.status.success());
    let o = Command::new(sluice_bin())
        .args(["approvals", "approve", &id.to_string(), "--admin"])
        .arg(format!("http://{}", s.admin))
        .args(["--token", &s.keys.token("bob", &["leads"])])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = waiting.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("approval {id} requested")));
    assert!(marker.exists(), "the approved command ran");
    let ran = wait_record(&s.audit, |r| {
        r["type"] == "command" && r["decision"] == "allow" && r["approval"] == id
    });
    assert_eq!(ran["subject"], "alice");
}

#[test]
fn a_pty_session_is_recorded_and_its_hash_is_in_the_chain() {
    let s = setup(RULES, "");
    let token = s.token("alice");
    let o = s.ssh(&token, &["-tt"], Some("echo hello-from-pty\nexit\n"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("hello-from-pty"));
    let rec = wait_record(&s.audit, |r| r["type"] == "recording");
    let file = PathBuf::from(rec["file"].as_str().unwrap());
    let cast = std::fs::read(&file).unwrap();
    assert_eq!(rec["bytes"].as_u64().unwrap(), cast.len() as u64);
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&cast)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(rec["sha256"], sha, "the chain holds the recording's hash");
    let cast = String::from_utf8(cast).unwrap();
    let mut lines = cast.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    let events: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events
        .iter()
        .any(|e| e[1] == "o" && e[2].as_str().unwrap().contains("hello-from-pty")));
    assert!(events.iter().any(|e| e[1] == "i"));
    // The command typed in the shell is read off the terminal's screen and
    // recorded as such (the shell ran it: observed, with what the rules say).
    let line = wait_record(&s.audit, |r| {
        r["type"] == "command" && r["request"] == "shell-line"
    });
    assert_eq!(line["text"], "echo hello-from-pty", "{line}");
    assert_eq!(line["decision"], "observed");
    assert_eq!(line["rules"], "allow");
    assert_eq!(line["source"], "screen");

    // `audit search --type session` lists the session and its recording.
    let found = Command::new(sluice_bin())
        .args(["audit", "search", "--type", "session", "--dir"])
        .arg(&s.audit)
        .output()
        .unwrap();
    let found = text(&found.stdout);
    assert!(
        found.contains("\"session_start\"") && found.contains("\"recording\""),
        "{found}"
    );
    assert!(!found.contains("\"command\""), "{found}");

    // The recording replays in a terminal.
    let id = file.file_stem().unwrap().to_str().unwrap().to_owned();
    let listed = Command::new(sluice_bin())
        .args(["sessions", "list", "--dir"])
        .arg(&s.audit)
        .output()
        .unwrap();
    assert!(
        text(&listed.stdout).contains(&id),
        "{}",
        text(&listed.stdout)
    );
    let played = Command::new(sluice_bin())
        .args(["sessions", "play", &id, "--speed", "0", "--dir"])
        .arg(&s.audit)
        .output()
        .unwrap();
    assert!(played.status.success(), "{}", text(&played.stderr));
    assert!(text(&played.stdout).contains("hello-from-pty"));

    // `audit verify` proves the recording untouched, and catches an edit.
    let mut s = s;
    s.sluice.signal(libc::SIGTERM);
    assert!(s.sluice.wait_exit(Duration::from_secs(15)).is_some());
    let verify = || {
        Command::new(sluice_bin())
            .args(["audit", "verify", "--dir"])
            .arg(&s.audit)
            .output()
            .unwrap()
    };
    let o = verify();
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        text(&o.stdout).contains("1 session recordings"),
        "{}",
        text(&o.stdout)
    );
    let edited = cast.replace("hello-from-pty", "hello-from-PTY");
    std::fs::write(&file, edited).unwrap();
    let o = verify();
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("is not the one recorded"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_hundred_concurrent_sessions() {
    let s = setup(RULES, "");
    let token = s.token("alice");
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let (addr, token) = (s.addr, token.clone());
            std::thread::spawn(move || {
                let mut cmd = Command::new("sshpass");
                cmd.arg("-p")
                    .arg(&token)
                    .arg("ssh")
                    .args(ssh_options(addr))
                    .arg(format!("echo session-{i}"));
                (i, run(cmd, None))
            })
        })
        .collect();
    for h in handles {
        let (i, o) = h.join().unwrap();
        assert_eq!(o.status.code(), Some(0), "session {i}: {}", text(&o.stderr));
        assert_eq!(text(&o.stdout), format!("session-{i}\n"));
    }
}

/// Where shells are off, a command with a terminal is a shell in all but
/// name (`ssh -t host sudo -i`), and `sftp-server` or `scp` run by `exec`
/// is file transfer: both are judged by those rules, not only by commands.
#[test]
fn shells_and_transfers_by_another_name_follow_their_rules() {
    let s = setup(
        r#"rules = [{ commands = ["rm *"], action = "deny" }]
shell = "deny"
"#,
        "",
    );
    let token = s.token("alice");
    let o = s.ssh(&token, &["-tt", "bash", "-i"], Some("exit\n"));
    assert_eq!(o.status.code(), Some(126), "{}", text(&o.stderr));
    assert!(
        format!("{}{}", text(&o.stdout), text(&o.stderr)).contains("count as interactive shells"),
        "{}",
        text(&o.stdout)
    );
    let o = s.ssh(&token, &["-tt"], Some("exit\n"));
    assert_eq!(o.status.code(), Some(126));
    let o = s.ssh(&token, &["/usr/lib/openssh/sftp-server"], Some(""));
    assert_eq!(o.status.code(), Some(126), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("file transfer"),
        "{}",
        text(&o.stderr)
    );
    let o = s.ssh(&token, &["scp", "-f", "/etc/hostname"], Some(""));
    assert_eq!(o.status.code(), Some(126));
    // Without a terminal, plain commands still run.
    let o = s.ssh(&token, &["echo fine"], None);
    assert_eq!(text(&o.stdout), "fine\n", "{}", text(&o.stderr));
}

/// A masking profile on an SSH target masks what commands and shells print,
/// in what the client sees and in the recording alike.
#[test]
fn output_is_masked_where_the_target_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.txt");
    // A card number and an email, and a card number split across two writes.
    std::fs::write(
        &secrets,
        "card 4111 1111 1111 1111 mail jane.doe@example.com\n",
    )
    .unwrap();
    let s = setup_with(
        RULES,
        "",
        "masking = \"pii\"\n",
        "[masking.pii]\ndetectors = [\"email\", \"credit_card\"]\n",
    );
    let token = s.token("alice");
    let split = "printf '4111 1111 '; printf '1111 1111\\n' >&1";
    let o = s.ssh(
        &token,
        &[&format!(
            "cat {}; {split}; echo on-stderr jane.doe@example.com >&2",
            secrets.display()
        )],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(!out.contains("4111 1111 1111 1111"), "{out}");
    assert!(!out.contains("jane.doe@example.com"), "{out}");
    assert!(out.contains("card ") && out.contains(" mail "), "{out}");
    assert!(!err.contains("jane.doe@example.com"), "{err}");
    assert!(err.contains("on-stderr"), "{err}");

    // A shell: the screen, the recording and the commands read off it.
    let o = s.ssh(
        &token,
        &["-tt"],
        Some(&format!("cat {}\nexit\n", secrets.display())),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!text(&o.stdout).contains("jane.doe@example.com"));
    assert!(text(&o.stdout).contains("mail "), "{}", text(&o.stdout));
    let rec = wait_record(&s.audit, |r| r["type"] == "recording");
    let cast = std::fs::read_to_string(rec["file"].as_str().unwrap()).unwrap();
    let shown: String = cast
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e[1] == "o")
        .map(|e| e[2].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(shown.contains("mail "), "{shown}");
    assert!(!shown.contains("jane.doe@example.com"), "{shown}");
    assert!(!shown.contains("4111 1111 1111 1111"), "{shown}");
}

/// Where the guardrails allow port forwarding, `ssh -W` / `-L` reach the
/// destination from the host (here: the host's own sshd answers).
#[test]
fn port_forwarding_runs_where_the_guardrails_allow_it() {
    let s = setup(&format!("{RULES}port_forwarding = \"allow\"\n"), "");
    let token = s.token("alice");
    let target = format!("127.0.0.1:{}", s.sshd.port);
    let o = s.ssh(&token, &["-W", &target], Some(""));
    assert!(
        text(&o.stdout).starts_with("SSH-2.0-"),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    wait_record(&s.audit, |r| {
        r["request"] == "forward" && r["text"] == target.as_str() && r["decision"] == "allow"
    });
}

/// An OpenSSH user certificate signed by a CA in `[identity] ssh_user_ca`.
struct Ca {
    dir: tempfile::TempDir,
}

impl Ca {
    fn new() -> Ca {
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("ca"));
        Ca { dir }
    }

    fn public(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.pub"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// A client key and its certificate (`ssh-keygen -s` with `options`).
    fn issue(&self, name: &str, options: &[&str]) -> PathBuf {
        let key = self.dir.path().join(name);
        keygen(&key);
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(self.dir.path().join("ca"))
            .args(["-I", name])
            .args(options)
            .arg(key.with_extension("pub"))
            .status()
            .unwrap();
        assert!(ok.success());
        key
    }
}

impl Setup {
    /// `ssh` through the gateway logging in with `key` and its certificate.
    fn ssh_cert(&self, key: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new("ssh");
        cmd.args(["-p", &self.addr.port().to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "PreferredAuthentications=publickey", "-i"])
            .arg(key)
            .arg("-o")
            .arg(format!("CertificateFile={}-cert.pub", key.display()))
            .arg(format!("anyone@{}", self.addr.ip()))
            .args(args);
        run(cmd, None)
    }
}

/// Certificates log in as their principal, with the groups they name, only
/// when a configured CA signed them for a bounded time; their options hold.
#[test]
fn a_certificate_logs_in_as_its_principal_and_its_limits_hold() {
    let (ca, rogue) = (Ca::new(), Ca::new());
    let s = setup_with(
        &format!("{RULES}port_forwarding = \"allow\"\n"),
        "",
        "",
        &format!("[identity]\nssh_user_ca = [\"{}\"]\n", ca.public()),
    );
    let good = ca.issue(
        "alice",
        &["-n", "alice,group:agents", "-V", "+1h", "-z", "7"],
    );
    let o = s.ssh_cert(&good, &["echo via-cert"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "via-cert\n");
    let start = wait_record(&s.audit, |r| {
        r["type"] == "session_start" && r["subject"] == "alice"
    });
    assert_eq!(start["login"], "certificate alice serial 7");
    assert_eq!(start["groups"], serde_json::json!(["agents"]));
    // The command rules hold as for a token login.
    let o = s.ssh_cert(&good, &["rm -rf /tmp/nothing"]);
    assert_eq!(o.status.code(), Some(126));

    // Refused: another CA, no expiry, no subject, a group without access,
    // a source address the client is not at.
    for (name, options, why) in [
        (
            "forever",
            &["-n", "alice,group:agents"][..],
            "valid forever",
        ),
        (
            "nobody",
            &["-n", "group:agents", "-V", "+1h"][..],
            "no principal",
        ),
        ("intern", &["-n", "eve,group:interns", "-V", "+1h"][..], ""),
        (
            "elsewhere",
            &[
                "-n",
                "alice,group:agents",
                "-V",
                "+1h",
                "-O",
                "source-address=10.9.9.0/24",
            ][..],
            "may only be used from 10.9.9.0/24",
        ),
    ] {
        let key = ca.issue(name, options);
        let o = s.ssh_cert(&key, &["echo ran"]);
        assert_eq!(o.status.code(), Some(255), "{name}: {}", text(&o.stdout));
        assert!(text(&o.stdout).is_empty(), "{name}");
        if !why.is_empty() {
            wait_record(&s.audit, |r| {
                r["type"] == "auth_failure" && r["reason"].as_str().is_some_and(|x| x.contains(why))
            });
        }
    }
    let forged = rogue.issue("forged", &["-n", "alice,group:agents", "-V", "+1h"]);
    let o = s.ssh_cert(&forged, &["echo ran"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o.stdout).is_empty());
    wait_record(&s.audit, |r| {
        r["type"] == "auth_failure"
            && r["reason"]
                .as_str()
                .is_some_and(|x| x.contains("not signed by a CA in identity.ssh_user_ca"))
    });
    wait_record(&s.audit, |r| {
        r["type"] == "access_denied" && r["subject"] == "eve"
    });

    // force-command runs instead of what was asked; no permit-pty: no terminal.
    let forced = ca.issue(
        "forced",
        &[
            "-n",
            "alice,group:agents",
            "-V",
            "+1h",
            "-O",
            "clear",
            "-O",
            "force-command=echo forced",
        ],
    );
    let o = s.ssh_cert(&forced, &["echo asked"]);
    assert_eq!(text(&o.stdout), "forced\n", "{}", text(&o.stderr));
    wait_record(&s.audit, |r| {
        r["type"] == "command" && r["text"] == "echo forced"
    });
    wait_record(&s.audit, |r| {
        r["type"] == "command" && r["text"] == "echo asked" && r["decision"] == "replaced"
    });
    let o = s.ssh_cert(&forced, &["-tt", "echo asked"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("PTY allocation request failed"),
        "{}",
        text(&o.stderr)
    );
    wait_record(&s.audit, |r| {
        r["type"] == "command" && r["request"] == "pty" && r["decision"] == "deny"
    });
    // No permit-port-forwarding: no forward, though the guardrails would allow it.
    let o = s.ssh_cert(&forced, &["-W", &format!("127.0.0.1:{}", s.sshd.port)]);
    assert!(!text(&o.stdout).starts_with("SSH-"), "{}", text(&o.stdout));
}

/// `upstream_known_hosts` instead of a pinned key: the upstream's key is
/// looked up by host and port; a file that does not hold it refuses.
#[test]
fn an_upstream_known_from_a_known_hosts_file() {
    let known = free_addr();
    let target = |name: &str, listen, file: &str| {
        format!(
            "[[target]]\nname = \"{name}\"\nprotocol = \"ssh\"\nlisten = \"{listen}\"\nupstream = \"127.0.0.1:{{SSHD_PORT}}\"\n\
             upstream_known_hosts = \"{file}\"\ncredentials = {{ user = \"{}\", key_file = \"{{CLIENT_KEY}}\" }}\naccess = [\"agents\"]\n",
            user()
        )
    };
    let elsewhere = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        elsewhere.path(),
        "[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOf3vEtSlyF30sj5rBqxHhxG6yY2e+bLbhUvGrYVGDbB\n",
    )
    .unwrap();
    let s = setup(RULES, &target("known", known, "{KNOWN_HOSTS}"));
    let token = s.token("alice");
    let o = s.ssh_to(known, &token, &["echo known"], None);
    assert_eq!(text(&o.stdout), "known\n", "{}", text(&o.stderr));
    drop(s);
    // A file without the upstream's key fails the load, naming what to add.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    let keys = Keys::new(dir.path());
    std::fs::write(
        &config,
        format!(
            "{}\n[[target]]\nname = \"web\"\nprotocol = \"ssh\"\nlisten = \"{known}\"\nupstream = \"127.0.0.1:2222\"\n\
             upstream_known_hosts = \"{}\"\ncredentials = {{ user = \"x\", key_file = \"/nonexistent\" }}\naccess = [\"agents\"]\n",
            keys.identity_block(),
            elsewhere.path().display()
        ),
    )
    .unwrap();
    let o = Command::new(sluice_bin())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        format!("{}{}", text(&o.stdout), text(&o.stderr))
            .contains("has no key for [127.0.0.1]:2222"),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// Recordings are rotated with the log: when retention removes a segment,
/// the recordings it vouches for go with it, and `audit verify` still passes.
#[test]
fn recordings_leave_with_the_segment_that_vouches_for_them() {
    let s = setup_with(
        RULES,
        "",
        "",
        "[audit]\ncheckpoint_every = 5\nsegment_size = 4096\nretention_size = 12000\n",
    );
    let token = s.token("alice");
    for i in 0..30 {
        let o = s.ssh(&token, &[&format!("echo round-{i}")], None);
        assert_eq!(
            text(&o.stdout),
            format!("round-{i}\n"),
            "{}",
            text(&o.stderr)
        );
    }
    let sessions = s.audit.join("sessions");
    let left = || std::fs::read_dir(&sessions).unwrap().count();
    assert!(
        wait_for(Duration::from_secs(10), || (left() < 30).then_some(())).is_some(),
        "retention removed no recording: {} left",
        left()
    );
    assert!(left() > 0, "the newest recordings stay");
    let mut s = s;
    s.sluice.signal(libc::SIGTERM);
    assert!(s.sluice.wait_exit(Duration::from_secs(15)).is_some());
    let o = Command::new(sluice_bin())
        .args(["audit", "verify", "--dir"])
        .arg(&s.audit)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
}

/// A recording the gateway never sealed (it was killed mid-session) is named
/// by `audit verify`: its start is on the record, nothing vouches for its end.
#[test]
fn a_recording_cut_short_by_a_crash_is_named_by_verify() {
    let s = setup(RULES, "");
    let token = s.token("alice");
    let (addr, t) = (s.addr, token.clone());
    let session = std::thread::spawn(move || {
        let mut cmd = Command::new("sshpass");
        cmd.arg("-p")
            .arg(&t)
            .arg("ssh")
            .args(ssh_options(addr))
            .arg("echo started; sleep 20");
        run(cmd, None)
    });
    let start = wait_record(&s.audit, |r| r["type"] == "recording_start");
    let mut s = s;
    s.sluice.signal(libc::SIGKILL);
    assert!(s.sluice.wait_exit(Duration::from_secs(10)).is_some());
    let _ = session.join();
    let o = Command::new(sluice_bin())
        .args(["audit", "verify", "--allow-open-tail", "--dir"])
        .arg(&s.audit)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let file = start["file"].as_str().unwrap();
    assert!(
        text(&o.stdout).contains(&format!(
            "the recording {file} was started and never sealed"
        )),
        "{}",
        text(&o.stdout)
    );
}
