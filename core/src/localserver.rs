//! Starting throw-away database servers on this machine: finding their
//! binaries and running them as an unprivileged user when we are root (they
//! refuse to run as root). Used by `sluice demo` and by the test harness.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL server binary (`initdb`, `pg_ctl`, ...), newest major version first.
pub fn pg_bin(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join(name).exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().map(|d| d.join(name))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `program` as system user `user` when we are root, as ourselves otherwise.
pub fn as_user(user: &str, program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg(user).arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A program on `PATH` (or in /usr/sbin, /usr/bin).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.exists())
}
