//! CPU time of the process behind an endpoint, from `/proc`.

use std::fs;

/// What the load tests read of one process's `/proc/PID/stat`.
struct Stat {
    ppid: u32,
    /// utime + stime, in clock ticks.
    own: u64,
    /// cutime + cstime: the children it has waited for, in clock ticks.
    reaped: u64,
}

/// Parses one `/proc/PID/stat` line.
fn parse_stat(line: &str) -> Option<Stat> {
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = line.get(line.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    // cutime and cstime are signed in the kernel's format.
    let ticks =
        |i: usize| -> Option<u64> { Some(fields.get(i)?.parse::<i64>().ok()?.max(0) as u64) };
    // ppid is field 4 of the whole line, utime..cstime fields 14..17: 1 and 11..14 here.
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        own: ticks(11)? + ticks(12)?,
        reaped: ticks(13)? + ticks(14)?,
    })
}

fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn ticks_to_micros(ticks: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000 / hz
}

/// The parent of `pid`.
pub fn parent(pid: u32) -> Option<u32> {
    stat(pid).map(|s| s.ppid)
}

/// The command name of `pid` (`comm`).
pub fn name(pid: u32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_owned())
}

/// User + system CPU time of `pid`, in microseconds.
pub fn cpu_micros(pid: u32) -> Option<u64> {
    stat(pid).map(|s| ticks_to_micros(s.own))
}

/// User + system CPU time of `root` and every process below it, in
/// microseconds: for servers that fork a process per connection (sshd), whose
/// listener does little of the work itself.
///
/// Each live process of the tree counts its own time and that of the children
/// it has reaped: when a process waits for a child, the kernel adds the
/// child's whole time (its own reaped children's included) to the parent's
/// `cutime`/`cstime`. So a connection's process that exits and is reaped
/// between two readings moves its time from its own line to its parent's, and
/// the total does not drop. Not counted: a process that outlives its parent
/// or whose parent exits without waiting for it (re-parented out of the tree:
/// sshd's session processes, hence `sluice-loadtest reaper`), and one reaped
/// between the reading of its parent and its own (the scenarios read when no
/// connection is open).
pub fn tree_cpu_micros(root: u32) -> Option<u64> {
    let top = stat(root)?;
    let mut others: Vec<(u32, Stat)> = Vec::new();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid != root {
            if let Some(s) = stat(pid) {
                others.push((pid, s));
            }
        }
    }
    let mut total = top.own + top.reaped;
    let mut parents = vec![root];
    // Each process leaves `others` when it joins the tree: the walk ends.
    while let Some(parent) = parents.pop() {
        let mut i = 0;
        while i < others.len() {
            if others[i].1.ppid == parent {
                let (pid, s) = others.swap_remove(i);
                total += s.own + s.reaped;
                parents.push(pid);
            } else {
                i += 1;
            }
        }
    }
    Some(ticks_to_micros(total))
}

/// The pid listening on a local TCP `port`, found via `/proc/net/tcp{,6}` and
/// each process's open descriptors.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            let Some(local) = cols.get(1) else { continue };
            let Some((_, p)) = local.rsplit_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() == Some(port) && cols.get(3) == Some(&"0A") {
                if let Some(inode) = cols.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_listener_and_cpu_time() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
        let before = cpu_micros(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_micros(std::process::id()).unwrap() > before);
    }

    #[test]
    fn parses_a_command_name_with_spaces_and_parens() {
        let line =
            "4242 (sshd: me (x) y) S 17 4242 4242 0 -1 4194560 100 0 0 0 7 3 11 5 20 0 1 0 99 1 1";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.ppid, s.own, s.reaped), (17, 10, 16));
    }

    #[test]
    fn the_tree_keeps_a_reaped_child_s_time() {
        let me = std::process::id();
        let before = tree_cpu_micros(me).unwrap();
        // A child that burns CPU in its own process, then is waited for.
        let ok = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(ok.success());
        let after = tree_cpu_micros(me).unwrap();
        assert!(after >= before + 20_000, "{before} -> {after}");
    }
}
