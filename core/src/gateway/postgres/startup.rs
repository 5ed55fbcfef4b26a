//! The client's login: the startup message read and its parameters checked,
//! the password (the caller's access token) asked for and verified, the
//! caller's access to the target checked, and each setting the startup packet
//! makes judged like the `SET` it amounts to. What passes is what the upstream
//! login sends on.

use std::net::SocketAddr;
use std::rc::Rc;

use monoio::io::AsyncWriteRentExt;
use sluice_config::Target;
use sluice_protocols::postgres as pg;
use sluice_protocols::postgres::encode;
use sluice_protocols::postgres::frontend::{tag, Startup};
use sluice_protocols::sql;

use super::io::{fatal, read_message, read_startup, Io, ReadError};
use super::{encoding_refusal, sqlstate, LOGIN_TIMEOUT};
use crate::audit::event::{AccessDenied, AuthFailure, Event as _};
use crate::identity::{AuthError, Identity};
use crate::policy::Verdict;
use crate::shard::Shard;
use crate::warn;

/// Longest password message (the access token) a client may send.
const MAX_PASSWORD_MESSAGE: usize = 64 * 1024;

/// Startup parameters that belong to the protocol rather than naming a setting.
/// `user` is informational (the upstream login is the target's), `database` is
/// passed unless the target fixes it, `options` is read setting by setting,
/// `replication` is refused unless off, and `_pq_.*` extensions are declined
/// with `NegotiateProtocolVersion`.
const PROTOCOL_PARAMS: &[&str] = &["user", "database", "options", "replication"];

/// Settings drivers send at every login (libpq, JDBC, npgsql, node-postgres,
/// psycopg): passed without consulting rules on kind `set`.
const DRIVER_DEFAULTS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "extra_float_digits",
    "intervalstyle",
    "geqo",
    "lc_monetary",
    "lc_numeric",
    "bytea_output",
    "standard_conforming_strings",
];

/// Reads the startup message, asks for the password (the token) and checks it.
/// Returns the caller and the startup parameters to pass upstream.
#[allow(clippy::too_many_arguments)]
pub(super) async fn client_login<C: Io>(
    shard: &Shard,
    index: usize,
    target: &Target,
    client: &mut C,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
    tls: bool,
) -> Option<(Rc<Identity>, Vec<(String, String)>)> {
    let (n, params) = match read_startup(client, buf, Some(LOGIN_TIMEOUT)).await {
        Ok((Startup::Message { minor, params, .. }, n)) => {
            let unknown: Vec<&str> = params
                .iter()
                .map(|(k, _)| k)
                .filter(|k| k.starts_with("_pq_."))
                .collect();
            if minor > 0 || !unknown.is_empty() {
                let mut out = Vec::new();
                encode::negotiate_protocol_version(&mut out, &unknown);
                let (res, _) = client.write_all(out).await;
                res.ok()?;
            }
            let owned: Vec<(String, String)> = params
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            (n, owned)
        }
        Ok(_) => {
            fatal(
                client,
                sqlstate::PROTOCOL_VIOLATION,
                "unexpected request after TLS negotiation",
            )
            .await;
            return None;
        }
        Err(ReadError::Malformed(e)) => {
            fatal(
                client,
                sqlstate::PROTOCOL_VIOLATION,
                &format!("invalid startup packet: {e}"),
            )
            .await;
            return None;
        }
        Err(ReadError::Closed | ReadError::Io(_)) => return None,
    };
    buf.drain(..n);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    if target.require_tls && !tls {
        fatal(
            client,
            sqlstate::INVALID_AUTHORIZATION,
            &format!(
                "target `{}` requires TLS: connect with sslmode=require",
                target.name
            ),
        )
        .await;
        return None;
    }
    if get("replication").is_some_and(|r| r != "false" && r != "0" && r != "off") {
        fatal(
            client,
            sqlstate::FEATURE_NOT_SUPPORTED,
            "replication connections are not allowed through Sluice",
        )
        .await;
        return None;
    }
    let settings = match startup_settings(&params) {
        Ok(s) => s,
        Err(e) => {
            fatal(client, sqlstate::FEATURE_NOT_SUPPORTED, &e).await;
            return None;
        }
    };
    // The password is the caller's access token.
    let mut out = Vec::with_capacity(16);
    encode::auth_cleartext_password(&mut out);
    let (res, _) = client.write_all(out).await;
    res.ok()?;
    let f = match read_message(client, buf, MAX_PASSWORD_MESSAGE, LOGIN_TIMEOUT).await {
        Ok(f) => f,
        Err(ReadError::Malformed(e)) => {
            fatal(
                client,
                sqlstate::PROTOCOL_VIOLATION,
                &format!("invalid password message: {e}"),
            )
            .await;
            return None;
        }
        Err(ReadError::Closed | ReadError::Io(_)) => return None,
    };
    if f.tag != tag::PASSWORD {
        fatal(
            client,
            sqlstate::PROTOCOL_VIOLATION,
            "expected a password message",
        )
        .await;
        return None;
    }
    let body = &buf[f.body()];
    let token = body.strip_suffix(&[0]).unwrap_or(body);
    let token = String::from_utf8_lossy(token).into_owned();
    buf.drain(..f.len);
    let user = get("user").unwrap_or("");
    let identity = match shard.authenticate(&token).await {
        Ok(id) => id,
        Err(e) => {
            warn!(
                "auth_failed",
                target = target.name,
                peer = peer,
                startup_user = user,
                reason = e
            );
            if let Some(audit) = shard.audit() {
                audit.note(|out| {
                    AuthFailure {
                        target: &target.name,
                        protocol: "postgres",
                        client: &peer.to_string(),
                        reason: &e.to_string(),
                        startup_user: Some(user),
                    }
                    .encode(out)
                });
            }
            let code = match e {
                AuthError::Missing => sqlstate::INVALID_AUTHORIZATION,
                _ => sqlstate::INVALID_PASSWORD,
            };
            fatal(client, code, &format!("Sluice refused the token: {e}")).await;
            return None;
        }
    };
    let generation = shard.generation();
    let policy = &generation.policy;
    let allowed = policy
        .target_index(&target.name)
        .is_some_and(|t| policy.may_connect(t, policy.groups(&identity.groups)));
    if !allowed {
        warn!(
            "access_denied",
            target = target.name,
            subject = identity.subject,
            peer = peer,
            groups = identity.groups.join(",")
        );
        if let Some(audit) = shard.audit() {
            audit.note(|out| {
                AccessDenied {
                    target: &target.name,
                    protocol: "postgres",
                    client: &peer.to_string(),
                    subject: &identity.subject,
                    groups: &identity.groups,
                }
                .encode(out)
            });
        }
        fatal(
            client,
            sqlstate::INVALID_AUTHORIZATION,
            &format!(
                "`{}` may not connect to target `{}`",
                identity.subject, target.name
            ),
        )
        .await;
        return None;
    }
    // Each setting is judged like the `SET` it amounts to.
    let resolved = crate::policy::Resolved::default();
    for (name, value) in &settings {
        if name == super::approval::REASON_SETTING {
            continue; // the requester's reason, for Sluice alone
        }
        let st = sql::setting(name.as_bytes(), sql::Value::Text(value.as_bytes()));
        // What drivers send at every login is not held to rules on `set`
        // (a rule denying `set` would refuse every JDBC or libpq client).
        let driver_default = st.kind == sql::Kind::Set
            && st.flags == sql::Flags::default()
            && DRIVER_DEFAULTS.contains(&name.as_str());
        let verdict = match encoding_refusal(target, &[st]) {
            Some(deny) => deny,
            None if driver_default => Verdict::Allow,
            None => shard.judge_statements(index, &identity, &resolved, &[st]),
        };
        let why = match verdict {
            Verdict::Allow => continue,
            Verdict::Deny { message, .. } => message.to_string(),
            Verdict::Approve { .. } => {
                "it needs approval, which a login cannot wait for: connect without it and SET it in the session".into()
            }
        };
        warn!(
            "startup_parameter_refused",
            target = target.name,
            subject = identity.subject,
            parameter = name,
            reason = why
        );
        fatal(
            client,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            &format!("startup parameter {name}={value} is not allowed through Sluice: {why}"),
        )
        .await;
        return None;
    }
    // The settings in the order the server applies them (`options` first, the
    // last of a name wins), then the database.
    let mut pass: Vec<(String, String)> = Vec::with_capacity(settings.len() + 2);
    for (name, value) in settings {
        pass.retain(|(k, _)| *k != name);
        pass.push((name, value));
    }
    if target.masking.is_some() {
        // Masking reads UTF-8 (any other encoding was refused above).
        pass.retain(|(k, _)| k != "client_encoding");
        pass.push(("client_encoding".into(), "UTF8".into()));
    }
    match (&target.database, get("database")) {
        (Some(db), _) => pass.push(("database".into(), db.clone())),
        (None, Some(db)) => pass.push(("database".into(), db.to_owned())),
        (None, None) => {}
    }
    if let Some(r) = get("replication") {
        pass.push(("replication".into(), r.to_owned()));
    }
    Some((identity, pass))
}

/// The settings a startup packet makes, in the order the server applies them:
/// those in `options` first, then every other parameter, names lower-cased
/// (PostgreSQL matches them without regard to case). Nothing is dropped: a
/// parameter is a setting, a protocol parameter, or an error.
pub fn startup_settings(params: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
    // PostgreSQL matches the protocol parameters by exact spelling and every
    // setting without regard to case: `User` or `-c user=...`, lower-cased
    // and passed on as a parameter of its own, would become the login user.
    // Such a look-alike is refused, never passed.
    let protocol_like = |name: &str| {
        let lower = name.to_ascii_lowercase();
        PROTOCOL_PARAMS.contains(&lower.as_str()) || lower.starts_with("_pq_.")
    };
    let mut out = Vec::new();
    for (k, v) in params {
        if k == "options" {
            for (name, value) in pg::options::parse(v).map_err(|e| e.to_string())? {
                if protocol_like(&name) {
                    return Err(format!(
                        "startup option -c {name} is not a setting and is not allowed through Sluice"
                    ));
                }
                out.push((name, value));
            }
        }
    }
    for (k, v) in params {
        if PROTOCOL_PARAMS.contains(&k.as_str()) || k.starts_with("_pq_.") {
            continue;
        }
        if k.is_empty() {
            return Err("empty startup parameter name".into());
        }
        if protocol_like(k) {
            return Err(format!(
                "startup parameter `{k}` is not allowed through Sluice (the protocol's own is `{}`)",
                k.to_ascii_lowercase()
            ));
        }
        out.push((k.to_ascii_lowercase(), v.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::startup_settings;

    fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_come_from_options_first_then_parameters_lower_cased() {
        let got = startup_settings(&params(&[
            ("user", "x"),
            ("database", "d"),
            ("TimeZone", "UTC"),
            ("options", "-c geqo=off --search-path=a"),
            ("replication", "false"),
            ("_pq_.ext", "1"),
        ]))
        .unwrap();
        assert_eq!(
            got,
            params(&[("geqo", "off"), ("search_path", "a"), ("timezone", "UTC")])
        );
    }

    #[test]
    fn protocol_parameter_look_alikes_are_refused() {
        for p in [
            ("User", "postgres"),
            ("DATABASE", "x"),
            ("Options", "-c role=admin"),
            ("Replication", "database"),
            ("_PQ_.x", "1"),
            ("options", "-c user=postgres"),
            ("options", "--options=-c\\ role=x"),
            ("options", "-c Replication=database"),
            ("options", "-c _pq_.x=1"),
        ] {
            assert!(startup_settings(&params(&[p])).is_err(), "{p:?}");
        }
    }
}
