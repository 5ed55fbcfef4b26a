//! Whole-file validation: every problem is collected with its position, then
//! reported together, so an operator fixes a file in one pass.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use crate::schema::*;
use crate::*;

mod rules;
mod service;
mod ssh;

use rules::{guardrail_set, masking_profile};
use service::{approvals, console, gateway, identity, state};

struct Checker<'a> {
    source: &'a str,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.source, span.start);
        self.diags.push(Diagnostic {
            line,
            col,
            message: message.into(),
        });
    }

    fn duration(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(v) = value else { return default };
        match parse_duration(v.get_ref()) {
            Some(d) => d,
            None => {
                self.error(
                    v.span(),
                    format!(
                        "invalid duration `{}` for `{key}`: expected a number with a unit, e.g. \"500ms\", \"30s\", \"5m\"",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn quorum(&mut self, value: &Spanned<i64>) -> u8 {
        match *value.get_ref() {
            q @ 1..=16 => q as u8,
            q => {
                self.error(
                    value.span(),
                    format!("`quorum` must be between 1 and 16 distinct approvers, not {q}"),
                );
                1
            }
        }
    }

    fn socket_addr(&mut self, value: &Spanned<String>, what: &str) -> Option<SocketAddr> {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    value.span(),
                    format!(
                        "invalid {what} `{}`: expected an IP address and port, e.g. \"127.0.0.1:6432\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn env_secret(
        &mut self,
        name: &Option<Spanned<String>>,
        key: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Secret> {
        let name = name.as_ref()?;
        if name.get_ref().is_empty() {
            self.error(
                name.span(),
                format!("`{key}` must name an environment variable"),
            );
            return None;
        }
        match env(name.get_ref()) {
            Some(v) => Some(Secret::new(v)),
            None => {
                self.error(
                    name.span(),
                    format!(
                        "environment variable `{}` (named by `{key}`) is not set",
                        name.get_ref()
                    ),
                );
                None
            }
        }
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// `host:port` with a non-empty host and a numeric port.
fn is_host_port(text: &str) -> bool {
    if text.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match text.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(['/', ' ', '[', ']'])
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

pub(crate) fn validate(
    raw: RawConfig,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Diagnostic>> {
    let mut c = Checker {
        source,
        diags: Vec::new(),
    };
    let gateway = gateway(&mut c, &raw.gateway);

    // Listen addresses must not collide (with each other or the admin listener).
    let mut listens: HashMap<SocketAddr, String> = HashMap::new();
    if let Some(admin) = gateway.admin {
        listens.insert(admin, "the admin listener".to_owned());
    }

    if raw.targets.is_empty() {
        c.error(
            0..0,
            "no targets: add at least one [[target]] with name, protocol, listen and upstream",
        );
    }

    let mut names: HashMap<String, Range<usize>> = HashMap::new();
    let mut needs_identity: Option<(String, Protocol, Range<usize>)> = None;
    let mut targets = Vec::with_capacity(raw.targets.len());
    for t in &raw.targets {
        let t = t.get_ref();
        let name = t.name.get_ref().clone();
        if !is_valid_name(&name) {
            c.error(
                t.name.span(),
                format!("invalid target name `{name}`: use 1-64 letters, digits, `_`, `-` or `.`"),
            );
        } else if names.contains_key(&name) {
            c.error(t.name.span(), format!("duplicate target name `{name}`"));
        } else {
            names.insert(name.clone(), t.name.span());
        }
        let protocol = *t.protocol.get_ref();
        let listen = c.socket_addr(&t.listen, "listen address");
        if let Some(addr) = listen {
            if let Some(other) = listens.get(&addr) {
                c.error(
                    t.listen.span(),
                    format!("listen address {addr} is already used by {other}"),
                );
            } else {
                listens.insert(addr, format!("target `{name}`"));
            }
        }
        if !is_host_port(t.upstream.get_ref()) {
            c.error(
                t.upstream.span(),
                format!(
                    "invalid upstream `{}`: expected host:port, e.g. \"127.0.0.1:5432\"",
                    t.upstream.get_ref()
                ),
            );
        }

        let access: Vec<String> = match &t.access {
            Some(a) => a.get_ref().iter().map(|g| g.get_ref().clone()).collect(),
            None => Vec::new(),
        };
        let access_span = t.access.as_ref().map(|a| a.span());
        if protocol == Protocol::Tcp {
            // At L4 there is no identity to check, so opening a tcp target to
            // everyone must be a visible, deliberate choice.
            if access != ["*"] {
                c.error(
                    access_span.unwrap_or(t.name.span()),
                    format!(
                        "tcp target `{name}` cannot check identity: it must say access = [\"*\"] explicitly"
                    ),
                );
            }
            for (present, key) in [
                (t.credentials.as_ref().map(|s| s.span()), "credentials"),
                (t.guardrails.as_ref().map(|s| s.span()), "guardrails"),
                (t.masking.as_ref().map(|s| s.span()), "masking"),
                (t.database.as_ref().map(|s| s.span()), "database"),
            ] {
                if let Some(span) = present {
                    c.error(
                        span,
                        format!("`{key}` has no effect on tcp target `{name}`: a tcp target is a plain L4 pass-through"),
                    );
                }
            }
            if let Some(a) = t.approvers.first() {
                c.error(
                    a.span(),
                    format!("`approvers` has no effect on tcp target `{name}`: a tcp target is a plain L4 pass-through"),
                );
            }
        } else {
            if access.is_empty() {
                c.error(
                    access_span.unwrap_or(t.name.span()),
                    format!("target `{name}` needs `access`: the groups that may connect, e.g. access = [\"sre\"]"),
                );
            }
            if needs_identity.is_none() {
                needs_identity = Some((name.clone(), protocol, t.protocol.span()));
            }
        }
        for g in t
            .access
            .iter()
            .flat_map(|a| a.get_ref())
            .chain(&t.approvers)
        {
            let g_name = g.get_ref();
            if g_name != "*" && !is_valid_name(g_name) {
                c.error(g.span(), format!("invalid group name `{g_name}`"));
            }
        }
        if let Some(g) = &t.guardrails {
            if !raw.guardrails.contains_key(g.get_ref()) {
                c.error(
                    g.span(),
                    format!(
                        "unknown guardrails `{}`: no [guardrails.{}] table",
                        g.get_ref(),
                        g.get_ref()
                    ),
                );
            }
        }
        if let Some(m) = &t.masking {
            if !raw.masking.contains_key(m.get_ref()) {
                c.error(
                    m.span(),
                    format!(
                        "unknown masking profile `{}`: no [masking.{}] table",
                        m.get_ref(),
                        m.get_ref()
                    ),
                );
            }
        }
        let credentials = t.credentials.as_ref().map(|cr| {
            let cr = cr.get_ref();
            Credentials {
                user: cr.user.as_ref().map(|u| u.get_ref().clone()),
                password: c.env_secret(&cr.password_env, "password_env", env),
                header: cr.header.as_ref().map(|h| h.get_ref().clone()),
                param: cr.param.as_ref().map(|h| h.get_ref().clone()),
                value: c.env_secret(&cr.value_env, "value_env", env),
                key_file: cr.key_file.as_ref().map(|k| k.get_ref().clone()),
            }
        });
        if protocol == Protocol::Http {
            http_target(&mut c, t, &name);
        }
        if protocol == Protocol::Ssh {
            ssh::target(&mut c, t, &name);
        } else {
            ssh::not_ssh(&mut c, t, &name, protocol);
        }
        let require_tls = t.require_tls.as_ref().is_some_and(|r| *r.get_ref());
        if require_tls && raw.tls.is_none() {
            c.error(
                t.require_tls.as_ref().map_or(t.name.span(), |r| r.span()),
                format!(
                    "target `{name}` requires TLS but there is no [tls] section with cert and key"
                ),
            );
        }
        let upstream_tls = t
            .upstream_tls
            .as_ref()
            .map_or(UpstreamTls::Disable, |u| *u.get_ref());
        if upstream_tls == UpstreamTls::Verify && t.upstream_ca.is_none() {
            c.error(
                t.upstream_tls.as_ref().map_or(t.name.span(), |u| u.span()),
                format!("target `{name}`: upstream_tls = \"verify\" needs `upstream_ca` (a PEM file of trusted CA certificates)"),
            );
        }
        if let (Some(m), false) = (&t.method_override, protocol == Protocol::Http) {
            c.error(
                m.span(),
                format!("`method_override` has no effect on {} target `{name}`: only http targets have methods", protocol.as_str()),
            );
        }
        if protocol == Protocol::Tcp {
            for (present, key) in [
                (t.require_tls.as_ref().map(|s| s.span()), "require_tls"),
                (t.upstream_tls.as_ref().map(|s| s.span()), "upstream_tls"),
                (t.upstream_ca.as_ref().map(|s| s.span()), "upstream_ca"),
            ] {
                if let Some(span) = present {
                    c.error(span, format!("`{key}` has no effect on tcp target `{name}`: a tcp target is a plain L4 pass-through"));
                }
            }
        }
        let quorum = match &t.quorum {
            Some(q) => c.quorum(q),
            None => 1,
        };
        if protocol == Protocol::Tcp {
            for (present, key) in [
                (t.quorum.as_ref().map(|s| s.span()), "quorum"),
                (t.approval_mode.as_ref().map(|s| s.span()), "approval_mode"),
            ] {
                if let Some(span) = present {
                    c.error(span, format!("`{key}` has no effect on tcp target `{name}`: a tcp target is a plain L4 pass-through"));
                }
            }
        }
        // Every rule that asks for approval must have someone who can give it.
        if let Some(set) = t
            .guardrails
            .as_ref()
            .and_then(|g| raw.guardrails.get(g.get_ref()))
        {
            for (i, r) in set.get_ref().rules.iter().enumerate() {
                let r = r.get_ref();
                let rule_approvers = r.approvers.as_ref().is_some_and(|a| !a.is_empty());
                if *r.action.get_ref() == Action::Approve
                    && !rule_approvers
                    && t.approvers.is_empty()
                {
                    c.error(
                        t.guardrails.as_ref().map_or(t.name.span(), |g| g.span()),
                        format!(
                            "target `{name}`: rule {} of guardrails `{}` needs approval but nobody may approve: set `approvers` on the target or the rule",
                            i + 1,
                            t.guardrails.as_ref().map_or("", |g| g.get_ref())
                        ),
                    );
                }
            }
        }
        let approval_timeout = t.approval_timeout.as_ref().map(|v| {
            let d = c.duration(
                &t.approval_timeout,
                "approval_timeout",
                Duration::from_secs(300),
            );
            if d.is_zero() || d > Duration::from_secs(7 * 24 * 3600) {
                c.error(v.span(), "`approval_timeout` must be between 1s and 7 days");
            }
            d
        });
        if let (Protocol::Tcp, Some(v)) = (protocol, &t.approval_timeout) {
            c.error(v.span(), format!("`approval_timeout` has no effect on tcp target `{name}`: a tcp target is a plain L4 pass-through"));
        }
        if let Some(listen) = listen {
            targets.push(Target {
                quorum,
                approval_timeout,
                approval_mode: t
                    .approval_mode
                    .as_ref()
                    .map(|m| *m.get_ref())
                    .or(raw
                        .approvals
                        .as_ref()
                        .and_then(|a| a.get_ref().mode.as_ref().map(|m| *m.get_ref())))
                    .unwrap_or_default(),
                require_tls,
                method_override: t.method_override.as_ref().is_some_and(|m| *m.get_ref()),
                upstream_tls,
                upstream_ca: t.upstream_ca.as_ref().map(|u| u.get_ref().clone()),
                upstream_host_key: t
                    .upstream_host_key
                    .as_ref()
                    .map(|k| k.get_ref().trim().to_owned()),
                upstream_known_hosts: t.upstream_known_hosts.as_ref().map(|k| k.get_ref().clone()),
                host_key: t.host_key.as_ref().map(|k| k.get_ref().clone()),
                name,
                protocol,
                listen,
                upstream: t.upstream.get_ref().clone(),
                credentials,
                access,
                approvers: t.approvers.iter().map(|a| a.get_ref().clone()).collect(),
                guardrails: t.guardrails.as_ref().map(|g| g.get_ref().clone()),
                masking: t.masking.as_ref().map(|m| m.get_ref().clone()),
                database: t.database.as_ref().map(|d| d.get_ref().clone()),
            });
        }
    }

    let identity = match (&raw.identity, needs_identity) {
        (Some(id), _) => Some(identity(&mut c, id.get_ref(), env)),
        (None, Some((name, protocol, span))) => {
            c.error(
                span,
                format!(
                    "target `{name}` uses protocol {} which authenticates callers with a token: add an [identity] section (issuer, audience, jwks)",
                    protocol.as_str()
                ),
            );
            None
        }
        (None, None) => None,
    };

    let audit = raw.audit.as_ref().map(|a| {
        if a.dir.get_ref().is_empty() {
            c.error(a.dir.span(), "`audit.dir` must not be empty");
        }
        let flush_interval = match &a.flush_interval_ms {
            Some(ms) if *ms.get_ref() <= 0 || *ms.get_ref() > 60_000 => {
                c.error(ms.span(), "`flush_interval_ms` must be between 1 and 60000");
                Duration::from_millis(5)
            }
            Some(ms) => Duration::from_millis(*ms.get_ref() as u64),
            None => Duration::from_millis(5),
        };
        let positive = |c: &mut Checker,
                        v: &Option<Spanned<i64>>,
                        key: &str,
                        min: i64,
                        default: u64| match v {
            Some(n) if *n.get_ref() < min => {
                c.error(n.span(), format!("`audit.{key}` must be at least {min}"));
                default
            }
            Some(n) => *n.get_ref() as u64,
            None => default,
        };
        let segment_bytes = positive(&mut c, &a.segment_size, "segment_size", 4096, 64 << 20);
        let checkpoint_every = positive(&mut c, &a.checkpoint_every, "checkpoint_every", 1, 1000);
        let retention_bytes = a
            .retention_size
            .as_ref()
            .map(|_| positive(&mut c, &a.retention_size, "retention_size", 4096, 0));
        let retention_age = a
            .retention_age
            .as_ref()
            .map(|_| c.duration(&a.retention_age, "retention_age", Duration::from_secs(0)));
        Audit {
            dir: a.dir.get_ref().clone(),
            durability: a.durability,
            flush_interval,
            signing_key: a.signing_key.as_ref().map(|k| k.get_ref().clone()),
            segment_bytes,
            segment_age: c.duration(&a.segment_age, "segment_age", Duration::from_secs(3600)),
            retention_age,
            retention_bytes,
            checkpoint_every,
            checkpoint_interval: c.duration(
                &a.checkpoint_interval,
                "checkpoint_interval",
                Duration::from_secs(10),
            ),
        }
    });

    if let (Some(t), None) = (&raw.gateway.admin_tls, &raw.tls) {
        if *t.get_ref() {
            c.error(
                t.span(),
                "`admin_tls = true` serves the admin listener with `[tls]`'s certificate: add `[tls]`",
            );
        }
    }
    let tls = raw.tls.as_ref().map(|t| {
        let t = t.get_ref();
        for (v, key) in [(&t.cert, "tls.cert"), (&t.key, "tls.key")] {
            if v.get_ref().is_empty() {
                c.error(v.span(), format!("`{key}` must name a PEM file"));
            }
        }
        Tls {
            cert: t.cert.get_ref().clone(),
            key: t.key.get_ref().clone(),
        }
    });

    let guardrails = raw
        .guardrails
        .iter()
        .map(|(name, g)| (name.clone(), guardrail_set(&mut c, g.get_ref())))
        .collect::<BTreeMap<_, _>>();
    let masking = raw
        .masking
        .iter()
        .map(|(name, m)| (name.clone(), masking_profile(&mut c, m.get_ref(), env)))
        .collect::<BTreeMap<_, _>>();

    let approvals = raw
        .approvals
        .as_ref()
        .map(|a| approvals(&mut c, a.get_ref()))
        .unwrap_or_default();
    let state = raw.state.as_ref().map(|s| state(&mut c, s, env));
    let console = raw
        .console
        .as_ref()
        .map(|s| console(&mut c, s, identity.is_some(), env));

    if !c.diags.is_empty() {
        c.diags.sort_by_key(|d| (d.line, d.col));
        return Err(c.diags);
    }
    Ok(Config {
        gateway,
        identity,
        audit,
        tls,
        targets,
        guardrails,
        masking,
        approvals,
        state,
        console,
    })
}

/// What only an HTTP target must (not) say.
fn http_target(c: &mut Checker, t: &RawTarget, name: &str) {
    if let Some(d) = &t.database {
        c.error(
            d.span(),
            format!("`database` has no effect on http target `{name}`"),
        );
    }
    let Some(cr) = &t.credentials else { return };
    let span = cr.span();
    let cr = cr.get_ref();
    if let Some(u) = cr.user.as_ref().or(cr.password_env.as_ref()) {
        c.error(
            u.span(),
            format!("http target `{name}` injects `{{ header = \"...\", value_env = \"VAR\" }}` or `{{ param = \"...\", value_env = \"VAR\" }}`, not a user and password"),
        );
    }
    match (&cr.header, &cr.param, &cr.value_env) {
        (Some(_), Some(p), _) => c.error(p.span(), "credentials: use `header` or `param`, not both"),
        (None, None, _) => c.error(span, format!("credentials of http target `{name}` need `header` (e.g. \"Authorization\") or `param`, with `value_env`")),
        (_, _, None) => c.error(span, format!("credentials of http target `{name}` need `value_env`: the variable holding the value")),
        _ => {}
    }
    for h in cr.header.iter().chain(&cr.param) {
        let v = h.get_ref();
        let token = !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            c.error(
                h.span(),
                format!("invalid name `{v}`: use letters, digits and -_."),
            );
        }
    }
}
