//! `sluice sessions list | play`: the recorded SSH sessions of an audit log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// List the recorded sessions (one line each: id, when, size, title).
    List {
        /// The audit log directory (`[audit] dir`).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Replay a recorded session in this terminal, at its own pace or faster.
    Play {
        /// The recording's id (as `list` shows it) or its file.
        id: String,
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// How many times faster than it happened (e.g. 4); 0 prints at once.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
}

pub fn run(cmd: SessionsCommand) -> i32 {
    let result = match cmd {
        SessionsCommand::List { dir } => list(&dir),
        SessionsCommand::Play { id, dir, speed } => play(&dir, &id, speed),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sluice sessions: {e}");
            1
        }
    }
}

fn list(dir: &Path) -> Result<(), String> {
    let sessions = dir.join("sessions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&sessions)
        .map_err(|e| format!("{}: {e}", sessions.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cast"))
        .collect();
    files.sort();
    let out = std::io::stdout();
    let mut out = out.lock();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let header: Value = text
            .lines()
            .next()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_default();
        let id = f.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        let _ = writeln!(
            out,
            "{id}  {}  {} bytes  {}",
            header["timestamp"].as_u64().unwrap_or(0),
            text.len(),
            header["title"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn play(dir: &Path, id: &str, speed: f64) -> Result<(), String> {
    let path = if Path::new(id).is_file() {
        PathBuf::from(id)
    } else {
        dir.join("sessions").join(format!("{id}.cast"))
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("{}: not an asciicast recording", path.display()))?;
    if header["version"] != 2 {
        return Err(format!("{}: not an asciicast v2 recording", path.display()));
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut at = 0.0f64;
    for line in lines {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(t), Some(kind), Some(data)) =
            (event[0].as_f64(), event[1].as_str(), event[2].as_str())
        else {
            continue;
        };
        if speed > 0.0 && t > at {
            std::thread::sleep(Duration::from_secs_f64(((t - at) / speed).min(5.0)));
        }
        at = t;
        match kind {
            "o" => {
                let _ = out.write_all(data.as_bytes());
            }
            "m" => {
                let _ = write!(out, "\r\n[sluice: {data}]\r\n");
            }
            _ => {}
        }
        let _ = out.flush();
    }
    Ok(())
}
