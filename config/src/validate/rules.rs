//! The rules applied to traffic: `[guardrails.*]` rule sets and `[masking.*]`
//! profiles.

use crate::schema::*;
use crate::*;

use super::{is_valid_name, Checker};

pub(super) fn guardrail_set(c: &mut Checker, g: &RawGuardrails) -> Guardrails {
    let rules: Vec<Rule> = g
        .rules
        .iter()
        .map(|r| {
            let span = r.span();
            let r = r.get_ref();
            for k in r.kinds.iter().flatten() {
                if !STATEMENT_KINDS.contains(&k.get_ref().as_str()) {
                    c.error(
                        k.span(),
                        format!(
                            "unknown statement kind `{}`: expected one of {}",
                            k.get_ref(),
                            STATEMENT_KINDS.join(", ")
                        ),
                    );
                }
            }
            for m in r.methods.iter().flatten() {
                if !HTTP_METHODS.contains(&m.get_ref().as_str()) {
                    c.error(
                        m.span(),
                        format!(
                            "unknown HTTP method `{}`: expected one of {}",
                            m.get_ref(),
                            HTTP_METHODS.join(", ")
                        ),
                    );
                }
            }
            if let Some(p) = &r.path {
                if !p.get_ref().starts_with('/') {
                    c.error(
                        p.span(),
                        format!(
                            "invalid path pattern `{}`: it must start with `/`",
                            p.get_ref()
                        ),
                    );
                }
            }
            for g in r.commands.iter().flatten() {
                if g.get_ref().trim().is_empty() {
                    c.error(g.span(), "an empty command pattern matches nothing");
                }
            }
            let sql = r.kinds.is_some();
            let http = r.methods.is_some() || r.path.is_some();
            let ssh = r.commands.is_some();
            if [sql, http, ssh].iter().filter(|x| **x).count() > 1 {
                c.error(
                    span,
                    "a rule matches one of SQL `kinds`, HTTP `methods`/`path` or SSH `commands`, not several",
                );
            } else if !sql && !http && !ssh {
                c.error(
                    span,
                    "a rule needs `kinds` (SQL), `methods`/`path` (HTTP) or `commands` (SSH) to match on",
                );
            }
            for g in r
                .groups
                .iter()
                .flatten()
                .chain(r.approvers.iter().flatten())
            {
                if !is_valid_name(g.get_ref()) {
                    c.error(g.span(), format!("invalid group name `{}`", g.get_ref()));
                }
            }
            if *r.action.get_ref() != Action::Approve {
                let approvers = r
                    .approvers
                    .as_ref()
                    .and_then(|a| a.first())
                    .map(|a| a.span());
                for (present, key) in [
                    (approvers, "approvers"),
                    (r.quorum.as_ref().map(|q| q.span()), "quorum"),
                    (r.reason.as_ref().map(|q| q.span()), "reason"),
                ] {
                    if let Some(span) = present {
                        c.error(
                            span,
                            format!("`{key}` only applies to a rule with action = \"approve\""),
                        );
                    }
                }
            }
            let quorum = r.quorum.as_ref().map(|q| c.quorum(q));
            Rule {
                kinds: r
                    .kinds
                    .iter()
                    .flatten()
                    .map(|k| k.get_ref().clone())
                    .collect(),
                commands: r
                    .commands
                    .iter()
                    .flatten()
                    .map(|k| sluice_protocols::shell::normalise(k.get_ref()))
                    .collect(),
                methods: r
                    .methods
                    .iter()
                    .flatten()
                    .map(|m| m.get_ref().clone())
                    .collect(),
                path: r.path.as_ref().map(|p| p.get_ref().clone()),
                unbounded: r.unbounded.unwrap_or(false),
                groups: r
                    .groups
                    .iter()
                    .flatten()
                    .map(|g| g.get_ref().clone())
                    .collect(),
                action: *r.action.get_ref(),
                message: r.message.clone(),
                approvers: r
                    .approvers
                    .iter()
                    .flatten()
                    .map(|g| g.get_ref().clone())
                    .collect(),
                quorum,
                reason: r.reason.as_ref().is_some_and(|r| *r.get_ref()),
            }
        })
        .collect();
    let functions = g
        .functions
        .iter()
        .filter_map(|f| {
            let name = f.get_ref();
            let parts: Vec<&str> = name.split('.').collect();
            let ok = parts.len() <= 2
                && parts.iter().all(|p| {
                    !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
                });
            if !ok {
                c.error(
                    f.span(),
                    format!("invalid function name `{name}`: expected `name` or `schema.name` (letters, digits, _)"),
                );
            }
            ok.then(|| name.to_ascii_lowercase())
        })
        .collect();
    let holds_commands = rules
        .iter()
        .any(|r: &Rule| !r.commands.is_empty() && r.action != Action::Allow)
        || g.other_commands
            .as_ref()
            .is_some_and(|o| *o.get_ref() != Action::Allow);
    let mut ssh = SshRules {
        shell: if holds_commands {
            Action::Deny
        } else {
            Action::Allow
        },
        ..SshRules::default()
    };
    for (value, key, slot) in [
        (&g.shell, "shell", &mut ssh.shell),
        (&g.sftp, "sftp", &mut ssh.sftp),
        (
            &g.port_forwarding,
            "port_forwarding",
            &mut ssh.port_forwarding,
        ),
        (
            &g.agent_forwarding,
            "agent_forwarding",
            &mut ssh.agent_forwarding,
        ),
        (&g.x11, "x11", &mut ssh.x11),
        (&g.other_commands, "other_commands", &mut ssh.other_commands),
    ] {
        if let Some(v) = value {
            if *v.get_ref() == Action::Approve && key != "shell" && key != "other_commands" {
                c.error(v.span(), format!("`{key}` is \"allow\" or \"deny\""));
            }
            if *v.get_ref() != Action::Deny && (key == "agent_forwarding" || key == "x11") {
                c.error(
                    v.span(),
                    format!("`{key}` can only be \"deny\": Sluice logs in to the host as itself, and forwarding the caller's agent or display to it would let whoever controls the host act as the caller"),
                );
            }
            *slot = *v.get_ref();
        }
    }
    Guardrails {
        rules,
        functions,
        ssh,
    }
}

pub(super) fn masking_profile(
    c: &mut Checker,
    m: &RawMasking,
    env: &dyn Fn(&str) -> Option<String>,
) -> MaskingProfile {
    let hash_key = c.env_secret(&m.hash_key_env, "hash_key_env", env);
    if let (Some(k), Some(name)) = (&hash_key, &m.hash_key_env) {
        if k.expose().len() < 16 {
            c.error(
                name.span(),
                format!(
                    "the `hash` key in `{}` is {} bytes; use at least 16 random bytes",
                    name.get_ref(),
                    k.expose().len()
                ),
            );
        }
    }
    for style in m.columns.values().chain(m.fields.values()) {
        if style.get_ref() == "hash" && m.hash_key_env.is_none() {
            c.error(
                style.span(),
                "the `hash` style needs `hash_key_env`: the environment variable holding the key its pseudonyms are derived from",
            );
        }
    }
    for d in &m.detectors {
        if !DETECTORS.contains(&d.get_ref().as_str()) {
            c.error(
                d.span(),
                format!(
                    "unknown detector `{}`: expected one of {}",
                    d.get_ref(),
                    DETECTORS.join(", ")
                ),
            );
        }
    }
    for (path, style) in &m.fields {
        if !(path.starts_with("$.") || path.starts_with("$[")) {
            c.error(
                style.span(),
                format!("invalid field path `{path}`: expected a path from the document root, e.g. \"$.users[*].ssn\""),
            );
        }
    }
    for style in m.columns.values().chain(m.fields.values()) {
        if !MASK_STYLES.contains(&style.get_ref().as_str()) {
            c.error(
                style.span(),
                format!(
                    "unknown mask style `{}`: expected one of {}",
                    style.get_ref(),
                    MASK_STYLES.join(", ")
                ),
            );
        }
    }
    let mut entities = Vec::new();
    for (name, e) in &m.entities {
        let e = e.get_ref();
        let validator = e
            .validator
            .as_ref()
            .map_or("none", |v| v.get_ref().as_str());
        if DETECTORS.contains(&name.as_str()) {
            c.error(
                e.pattern.span(),
                format!("custom entity `{name}` has the name of a built-in detector"),
            );
        } else {
            match sluice_masking::Entity::new(name, e.pattern.get_ref(), validator) {
                Ok(entity) => entities.push(entity),
                Err(why) => {
                    // Point at the part of the entry that is wrong.
                    let span = match (&e.validator, &why) {
                        (Some(v), sluice_masking::Error::UnknownValidator(_)) => v.span(),
                        _ => e.pattern.span(),
                    };
                    c.error(span, format!("custom entity `{name}`: {why}"));
                }
            }
        }
    }
    MaskingProfile {
        entities: entities.into(),
        strict_columns: m.strict_columns.unwrap_or(true),
        detectors: m.detectors.iter().map(|d| d.get_ref().clone()).collect(),
        columns: m
            .columns
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect(),
        fields: m
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect(),
        hash_key: hash_key.map(|k| sluice_masking::HashKey::derive(k.expose().as_bytes())),
    }
}
