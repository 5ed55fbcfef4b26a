//! `sluice-loadtest reaper -- COMMAND...`: runs a forking server (sshd) under
//! a child subreaper, so that the CPU of every process it ever forks stays
//! countable from `/proc`.
//!
//! A process's `cutime`/`cstime` only hold the children it waited for. sshd's
//! per-connection monitor (`sshd: USER [priv]`) exits without waiting for its
//! session process (`sshd: USER@notty`), which has by then reaped every
//! command the connection ran: that process is re-parented and its time,
//! commands included, leaves the listener's tree (OpenSSH 9.2, seen with
//! strace). Under a subreaper it is re-parented to the reaper instead, which
//! waits for it, and the whole tree's time ends up in the reaper's `cutime`.

use std::os::unix::process::CommandExt;

use anyhow::Context;

/// Runs `command` as this process's child, waits for every process handed to
/// it until `command` exits, then exits with its status.
pub fn run(command: &[String]) -> anyhow::Result<()> {
    let (program, args) = command.split_first().context("reaper needs a command")?;
    // SAFETY: PR_SET_CHILD_SUBREAPER only sets a flag of this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("PR_SET_CHILD_SUBREAPER");
    }
    let me = std::process::id();
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    // SAFETY: the closure runs between fork and exec and only calls prctl and
    // getppid, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // The server goes when its reaper goes: stopping one stops both.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != me {
                return Err(std::io::Error::other("the reaper is gone"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("start {program}"))?;
    let server = child.id() as libc::pid_t;
    // Ends when the server exits; every other child is reaped on the way.
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == server {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            std::process::exit(code);
        }
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("waitpid");
            }
        }
    }
}

/// The reaper `pid` runs under, if it is one (its parent's command line is
/// `sluice-loadtest reaper ...`).
pub fn of(pid: u32) -> Option<u32> {
    let ppid = crate::procstat::parent(pid)?;
    let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).ok()?;
    let mut args = cmdline.split(|&b| b == 0);
    let program = args.next()?;
    let ours = program.ends_with(b"sluice-loadtest") && args.next() == Some(b"reaper".as_slice());
    ours.then_some(ppid)
}
