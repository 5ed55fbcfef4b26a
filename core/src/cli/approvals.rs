//! `sluice approvals`: list, show, approve and deny requests through a running
//! gateway's admin API, authenticated with the approver's own token.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Args)]
pub struct Connection {
    /// The gateway's admin address, e.g. http://127.0.0.1:9470.
    #[arg(long, value_name = "URL", env = "SLUICE_ADMIN")]
    pub(super) admin: String,
    /// Your own access token (approvers act as themselves).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SLUICE_TOKEN",
        hide_env_values = true
    )]
    token: String,
}

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// List requests (default: pending ones).
    List {
        #[command(flatten)]
        conn: Connection,
        /// pending, approved, denied, expired, cancelled or all.
        #[arg(long, default_value = "pending")]
        state: String,
    },
    /// Show one request in full (JSON).
    Show {
        id: u64,
        #[command(flatten)]
        conn: Connection,
    },
    /// Approve a request (you cannot approve your own).
    Approve {
        id: u64,
        #[command(flatten)]
        conn: Connection,
        /// A note kept with the decision.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a request; one deny is final.
    Deny {
        id: u64,
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub fn run(cmd: ApprovalsCommand) -> i32 {
    let result = match cmd {
        ApprovalsCommand::List { conn, state } => {
            let path = if state == "all" {
                "/api/approvals".to_owned()
            } else {
                format!("/api/approvals?state={state}")
            };
            call(&conn, "GET", &path, None).map(|v| print_list(&v))
        }
        ApprovalsCommand::Show { id, conn } => {
            // JSON escapes every control character: safe to print.
            call(&conn, "GET", &format!("/api/approvals/{id}"), None).map(|mut v| {
                with_utc_times(&mut v);
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            })
        }
        ApprovalsCommand::Approve { id, conn, reason } => vote(&conn, id, "approve", reason),
        ApprovalsCommand::Deny { id, conn, reason } => vote(&conn, id, "deny", reason),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sluice approvals: {e}");
            1
        }
    }
}

fn vote(conn: &Connection, id: u64, action: &str, reason: Option<String>) -> Result<(), String> {
    let body = serde_json::json!({ "reason": reason }).to_string();
    let v = call(
        conn,
        "POST",
        &format!("/api/approvals/{id}/{action}"),
        Some(body),
    )?;
    let r = &v["request"];
    let state = r["state"].as_str().unwrap_or("?");
    let votes = r["approvals"].as_array().map_or(0, Vec::len);
    let quorum = r["quorum"].as_u64().unwrap_or(1);
    let note = if v["counted"] == Value::Bool(false) {
        " (you had already approved; a vote counts once)"
    } else {
        ""
    };
    match state {
        "pending" => println!("approval {id}: pending, {votes} of {quorum} approvals{note}"),
        _ => println!("approval {id}: {state}{note}"),
    }
    Ok(())
}

fn print_list(v: &Value) {
    let empty = Vec::new();
    let list = v["approvals"].as_array().unwrap_or(&empty);
    if list.is_empty() {
        println!("no approval requests");
        return;
    }
    println!(
        "{:<6} {:<10} {:<16} {:<16} {:<8} {:<7} {:<24} STATEMENT",
        "ID", "STATE", "TARGET", "REQUESTER", "KIND", "VOTES", "EXPIRES (UTC)"
    );
    for r in list {
        // Whitespace folded and control characters dropped: a statement cannot
        // repaint the approver's terminal.
        let mut statement: String = r["statement"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        if statement.chars().count() > 60 {
            statement = statement.chars().take(57).collect::<String>() + "...";
        }
        // Cut to the column's width, so a long name cannot shift the table.
        let field = |k: &str, width: usize| {
            let v = clean(r[k].as_str().unwrap_or_default());
            if v.chars().count() > width {
                v.chars().take(width - 1).collect::<String>() + "~"
            } else {
                v
            }
        };
        let expires = r["expires_at"]
            .as_u64()
            .map_or_else(String::new, crate::log::rfc3339_ms);
        println!(
            "{:<6} {:<10} {:<16} {:<16} {:<8} {:<7} {:<24} {}",
            r["id"].as_u64().unwrap_or_default(),
            field("state", 10),
            field("target", 16),
            field("requester", 16),
            field("summary", 8),
            format!(
                "{}/{}",
                r["approvals"].as_array().map_or(0, Vec::len),
                r["quorum"]
            ),
            expires,
            statement
        );
    }
}

/// Adds an RFC 3339 form (`expires_at_utc`, ...) beside every time in
/// milliseconds since the epoch, for people reading the JSON.
fn with_utc_times(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let times: Vec<(String, u64)> = map
                .iter()
                .filter(|(k, _)| k.ends_with("_at") || *k == "at" || *k == "grant_until")
                .filter_map(|(k, v)| Some((format!("{k}_utc"), v.as_u64()?)))
                .collect();
            for v in map.values_mut() {
                with_utc_times(v);
            }
            for (k, ms) in times {
                map.insert(k, Value::String(crate::log::rfc3339_ms(ms)));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(with_utc_times),
        _ => {}
    }
}

/// Text without control characters (what a token or statement says must not
/// drive the terminal).
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// One admin API call; a non-2xx answer becomes its `error` text.
pub(super) fn call(
    conn: &Connection,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<Value, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}{path}", conn.admin.trim_end_matches('/'));
    if conn.token.trim().is_empty() {
        return Err(
            "--token is empty: pass your own access token (or set SLUICE_TOKEN); \
             `sluice token mint` makes one with a dev key"
                .into(),
        );
    }
    let auth = format!("Bearer {}", conn.token.trim());
    let resp = match body {
        Some(b) => agent
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(b),
        None if method == "GET" => agent.get(&url).header("authorization", &auth).call(),
        None => return Err(format!("unsupported method {method}")),
    };
    let mut resp = resp.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|_| format!("{url}: HTTP {status}: {}", text.trim()))?;
    if !(200..300).contains(&status) {
        return Err(format!(
            "HTTP {status}: {}",
            v["error"].as_str().unwrap_or(text.trim())
        ));
    }
    Ok(v)
}
