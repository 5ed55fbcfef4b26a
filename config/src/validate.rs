//! Whole-file validation: every problem is collected with its position, then
//! reported together, so an operator fixes a file in one pass.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use crate::schema::*;
use crate::*;

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
            }
        });
        if protocol == Protocol::Http {
            http_target(&mut c, t, &name);
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
        if let (Some(m), false) = (&t.method_override, protocol == Protocol::Http) {
            c.error(
                m.span(),
                format!("`method_override` has no effect on {} target `{name}`: only http targets have methods", protocol.as_str()),
            );
        }
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
    })
}

fn approvals(c: &mut Checker, a: &RawApprovals) -> Approvals {
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

fn gateway(c: &mut Checker, g: &RawGateway) -> Gateway {
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

fn identity(c: &mut Checker, id: &RawIdentity, env: &dyn Fn(&str) -> Option<String>) -> Identity {
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
    }
}

fn guardrail_set(c: &mut Checker, g: &RawGuardrails) -> Guardrails {
    let rules = g
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
            let sql = r.kinds.is_some();
            let http = r.methods.is_some() || r.path.is_some();
            if sql && http {
                c.error(
                    span,
                    "a rule matches either SQL `kinds` or HTTP `methods`/`path`, not both",
                );
            } else if !sql && !http {
                c.error(
                    span,
                    "a rule needs `kinds` (SQL) or `methods`/`path` (HTTP) to match on",
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
    Guardrails { rules, functions }
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

fn masking_profile(
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
                    let span = match (&e.validator, why.contains("validator")) {
                        (Some(v), true) => v.span(),
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
