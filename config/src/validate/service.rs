//! The sections about Sluice itself: `[gateway]`, `[identity]` and `[approvals]`
//! (with its webhook URLs).

use std::time::Duration;

use crate::schema::*;
use crate::*;

use super::{is_host_port, Checker};

pub(super) fn approvals(c: &mut Checker, a: &RawApprovals) -> Approvals {
    let d = Approvals::default();
    let timeout = c.duration(&a.timeout, "approvals.timeout", d.timeout);
    let grant_ttl = c.duration(&a.grant_ttl, "approvals.grant_ttl", d.grant_ttl);
    for (v, key, value) in [
        (&a.timeout, "timeout", timeout),
        (&a.grant_ttl, "grant_ttl", grant_ttl),
    ] {
        if let Some(v) = v {
            if value.is_zero() || value > Duration::from_secs(7 * 24 * 3600) {
                c.error(
                    v.span(),
                    format!("`approvals.{key}` must be between 1s and 7 days"),
                );
            }
        }
    }
    for url in &a.notify {
        if let Err(e) = check_webhook_url(url.get_ref()) {
            c.error(url.span(), e);
        }
    }
    let max_pending = match &a.max_pending {
        Some(n) if !(1..=1_000_000).contains(n.get_ref()) => {
            c.error(
                n.span(),
                "`approvals.max_pending` must be between 1 and 1000000",
            );
            d.max_pending
        }
        Some(n) => *n.get_ref() as usize,
        None => d.max_pending,
    };
    Approvals {
        timeout,
        grant_ttl,
        mode: a.mode.as_ref().map_or(d.mode, |m| *m.get_ref()),
        notify: a.notify.iter().map(|u| u.get_ref().clone()).collect(),
        max_pending,
    }
}

/// A webhook URL: `http://host:port/path` (the port may be omitted).
fn check_webhook_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "invalid webhook `{url}`: expected an http:// URL (for https, point it at a local relay such as a sidecar proxy)"
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    if authority.is_empty() || !is_host_port(&with_port) || authority.contains('@') {
        return Err(format!(
            "invalid webhook `{url}`: expected http://host[:port]/path"
        ));
    }
    Ok(())
}

pub(super) fn gateway(c: &mut Checker, g: &RawGateway) -> Gateway {
    let shards = match &g.shards {
        Some(s) if !(0..=1024).contains(s.get_ref()) => {
            c.error(
                s.span(),
                format!(
                    "`shards` must be between 0 (one per core) and 1024, not {}",
                    s.get_ref()
                ),
            );
            0
        }
        Some(s) => *s.get_ref() as usize,
        None => 0,
    };
    let buffer_size = match &g.buffer_size {
        Some(s) if !(4096..=16 << 20).contains(s.get_ref()) => {
            c.error(
                s.span(),
                "`buffer_size` must be between 4096 and 16777216 bytes",
            );
            64 << 10
        }
        Some(s) => *s.get_ref() as usize,
        None => 64 << 10,
    };
    let max_message = match &g.max_message {
        Some(s) if !(1024..=1 << 30).contains(s.get_ref()) => {
            c.error(
                s.span(),
                "`max_message` must be between 1024 and 1073741824 bytes",
            );
            64 << 20
        }
        Some(s) => *s.get_ref() as usize,
        None => 64 << 20,
    };
    Gateway {
        max_message,
        shards,
        admin: g
            .admin
            .as_ref()
            .and_then(|a| c.socket_addr(a, "admin address")),
        admin_tls: g.admin_tls.as_ref().is_some_and(|t| *t.get_ref()),
        drain_timeout: c.duration(&g.drain_timeout, "drain_timeout", Duration::from_secs(30)),
        connect_timeout: c.duration(
            &g.connect_timeout,
            "connect_timeout",
            Duration::from_secs(5),
        ),
        head_timeout: {
            let t = c.duration(&g.head_timeout, "head_timeout", Duration::from_secs(30));
            if let (true, Some(h)) = (t.is_zero(), &g.head_timeout) {
                c.error(h.span(), "`head_timeout` must be more than 0s");
            }
            t
        },
        pin_cores: g.pin_cores,
        io: g.io.as_ref().map_or(IoDriver::Auto, |i| *i.get_ref()),
        buffer_size,
    }
}

pub(super) fn identity(
    c: &mut Checker,
    id: &RawIdentity,
    env: &dyn Fn(&str) -> Option<String>,
) -> Identity {
    for (v, key) in [(&id.issuer, "issuer"), (&id.audience, "audience")] {
        if v.get_ref().is_empty() {
            c.error(v.span(), format!("`identity.{key}` must not be empty"));
        }
    }
    if let Some(j) = &id.jwks {
        let jwks = j.get_ref();
        let known_scheme = ["file:", "https://", "http://"]
            .iter()
            .any(|p| jwks.starts_with(p));
        if !known_scheme || jwks == "file:" {
            c.error(
                j.span(),
                format!("invalid jwks `{jwks}`: expected \"file:PATH\" or an http(s) URL (omit it to use OIDC discovery)"),
            );
        }
    }
    let algorithms: Vec<String> = match &id.algorithms {
        Some(list) => {
            if list.is_empty() {
                c.error(
                    id.audience.span(),
                    "`identity.algorithms` must not be empty",
                );
            }
            for a in list {
                if !JWT_ALGORITHMS.contains(&a.get_ref().as_str()) {
                    c.error(
                        a.span(),
                        format!(
                            "unknown or refused token algorithm `{}`: expected one of {}",
                            a.get_ref(),
                            JWT_ALGORITHMS.join(", ")
                        ),
                    );
                }
            }
            list.iter().map(|a| a.get_ref().clone()).collect()
        }
        None => DEFAULT_JWT_ALGORITHMS
            .iter()
            .map(|a| a.to_string())
            .collect(),
    };
    let hmac_secret = c.env_secret(&id.hmac_secret_env, "hmac_secret_env", env);
    if hmac_secret.is_none() && id.hmac_secret_env.is_none() {
        if let Some(a) = id
            .algorithms
            .iter()
            .flatten()
            .find(|a| a.get_ref().starts_with("HS"))
        {
            c.error(
                a.span(),
                format!(
                    "`{}` needs a shared secret: set `hmac_secret_env`",
                    a.get_ref()
                ),
            );
        }
    }
    Identity {
        issuer: id.issuer.get_ref().clone(),
        audience: id.audience.get_ref().clone(),
        jwks: id.jwks.as_ref().map(|j| j.get_ref().clone()),
        jwks_refresh: c.duration(&id.jwks_refresh, "jwks_refresh", Duration::from_secs(300)),
        groups_claim: id
            .groups_claim
            .as_ref()
            .map_or_else(|| "groups".to_owned(), |g| g.get_ref().clone()),
        leeway: c.duration(&id.leeway, "leeway", Duration::from_secs(30)),
        algorithms,
        hmac_secret,
        require_typ: id.require_typ.as_ref().map(|t| t.get_ref().clone()),
        admin_groups: id
            .admin_groups
            .iter()
            .map(|g| g.get_ref().clone())
            .collect(),
        ssh_user_ca: super::ssh::user_cas(c, &id.ssh_user_ca),
    }
}

/// `[state]`: the shared PostgreSQL store. The connection string is checked
/// here (keys, no inline password) so `sluice check` catches what the first
/// connection would only report at run time.
pub(super) fn state(
    c: &mut Checker,
    s: &toml::Spanned<RawState>,
    env: &dyn Fn(&str) -> Option<String>,
) -> State {
    let span = s.span();
    let s = s.get_ref();
    let postgres = match &s.postgres {
        None => {
            c.error(
                span.clone(),
                "`[state]` needs `postgres`: a connection string like \"host=db port=5432 dbname=sluice user=sluice\"",
            );
            String::new()
        }
        Some(p) => {
            if let Err(e) = check_conninfo(p.get_ref()) {
                c.error(p.span(), e);
            }
            p.get_ref().clone()
        }
    };
    let password = c.env_secret(&s.password_env, "password_env", env);
    let tls = s
        .tls
        .as_ref()
        .map_or(UpstreamTls::Disable, |t| *t.get_ref());
    if tls == UpstreamTls::Verify && s.ca.is_none() {
        c.error(
            s.tls.as_ref().map_or(span.clone(), |t| t.span()),
            "`[state] tls = \"verify\"` needs `ca` (a PEM file of trusted CA certificates)",
        );
    }
    if let (Some(ca), false) = (&s.ca, tls == UpstreamTls::Verify) {
        c.error(ca.span(), "`ca` is used only with `tls = \"verify\"`");
    }
    let instance = match &s.instance {
        Some(i) => {
            let name = i.get_ref();
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                c.error(
                    i.span(),
                    format!("invalid instance name `{name}`: 1 to 64 letters, digits and -_."),
                );
            }
            name.clone()
        }
        None => host_name(),
    };
    let lease = c.duration(&s.lease, "state.lease", Duration::from_secs(10));
    if let Some(l) = &s.lease {
        // Renewed every second: a shorter lease lapses between renewals.
        if lease < Duration::from_secs(3) || lease > Duration::from_secs(3600) {
            c.error(l.span(), "`state.lease` must be between 3s and 1h");
        }
    }
    State {
        postgres,
        password,
        tls,
        ca: s.ca.as_ref().map(|c| c.get_ref().clone()),
        instance,
        lease,
    }
}

/// `key=value` pairs separated by spaces, with known keys, a host and a
/// database, and no password (that belongs in `password_env`).
fn check_conninfo(conninfo: &str) -> Result<(), String> {
    let mut seen = Vec::new();
    for pair in conninfo.split_ascii_whitespace() {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!(
                "`{pair}` in `postgres` is not key=value (e.g. \"host=db port=5432 dbname=sluice user=sluice\")"
            ));
        };
        if key == "password" {
            return Err(
                "put the password in an environment variable named by `password_env`, not in `postgres`"
                    .into(),
            );
        }
        if key == "sslmode" {
            return Err("use `tls = \"require\"` or `\"verify\"` instead of sslmode".into());
        }
        if !STATE_CONNINFO_KEYS.contains(&key) {
            return Err(format!(
                "unknown key `{key}` in `postgres`: expected one of {}",
                STATE_CONNINFO_KEYS.join(", ")
            ));
        }
        if value.is_empty() || value.contains(['\'', '\\']) {
            return Err(format!("`{key}` in `postgres` needs a plain value"));
        }
        if key == "port" && value.parse::<u16>().is_err() {
            return Err(format!("invalid port `{value}` in `postgres`"));
        }
        seen.push(key);
    }
    for needed in ["host", "dbname", "user"] {
        if !seen.contains(&needed) {
            return Err(format!("`postgres` needs `{needed}=...`"));
        }
    }
    Ok(())
}

/// This machine's name (the default instance name).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                .take(64)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice".into())
}

/// `[console]`: OpenID Connect sign-in for the web console.
pub(super) fn console(
    c: &mut Checker,
    s: &toml::Spanned<RawConsole>,
    has_identity: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Console {
    let span = s.span();
    let s = s.get_ref();
    if !has_identity {
        c.error(
            span.clone(),
            "`[console]` signs in with `[identity]`'s issuer: configure `[identity]`",
        );
    }
    let client_id = match &s.client_id {
        Some(id) if !id.get_ref().trim().is_empty() => id.get_ref().clone(),
        Some(id) => {
            c.error(id.span(), "`client_id` is empty");
            String::new()
        }
        None => {
            c.error(
                span.clone(),
                "`[console]` needs `client_id`: the console's client at the identity provider",
            );
            String::new()
        }
    };
    let url = match &s.url {
        Some(u) => {
            let v = u.get_ref().trim_end_matches('/');
            let ok = (v.starts_with("http://") || v.starts_with("https://"))
                && v.split("://")
                    .nth(1)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
            if !ok {
                c.error(
                    u.span(),
                    format!("invalid console url `{v}`: expected http(s)://host[:port], as browsers reach the admin listener"),
                );
            }
            v.to_owned()
        }
        None => {
            c.error(
                span.clone(),
                "`[console]` needs `url`: the admin listener's address as browsers reach it (e.g. \"https://sluice.example.com:9470\")",
            );
            String::new()
        }
    };
    let scopes = s
        .scopes
        .as_ref()
        .map_or_else(|| "openid profile".to_owned(), |v| v.get_ref().clone());
    if !scopes.split_whitespace().any(|x| x == "openid") {
        c.error(
            s.scopes.as_ref().map_or(span, |v| v.span()),
            "`scopes` must include `openid`",
        );
    }
    Console {
        client_id,
        client_secret: c.env_secret(&s.client_secret_env, "client_secret_env", env),
        url,
        scopes,
    }
}
