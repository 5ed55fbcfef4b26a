//! Logging in to the upstream with the target's own credentials: optional TLS
//! (never downgraded), then trust, cleartext, MD5 or SCRAM-SHA-256.

use monoio::io::AsyncWriteRentExt;
use sluice_config::UpstreamTls;
use sluice_protocols::postgres::backend::{self, field, Auth, Backend};
use sluice_protocols::postgres::scram::{ScramClient, MECHANISM};
use sluice_protocols::postgres::{encode, Frame, SSL_WILLING};

use std::rc::Rc;

use sluice_masking::Style;

use super::io::{read_message, Io, ReadError};
use super::{Context, LOGIN_TIMEOUT};
use crate::error::{Error, Kind as ErrorKind};
use crate::net::read_more_timeout;
use crate::shard::catalogs::Catalog;
use crate::upstream::{self, Upstream};
use crate::{debug, warn};
use sluice_protocols::sql::columns::Protected;
use std::os::fd::AsRawFd;

/// Longest upstream message read during login and the catalog queries.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// A logged-in upstream connection.
pub struct Connected {
    pub stream: Upstream,
    /// `ParameterStatus` (and any `NoticeResponse`) messages to replay to the client.
    pub greeting: Vec<u8>,
    pub pid: u32,
    pub key: u32,
    pub status: u8,
    /// What the target's rules need to know of this upstream's catalog (see
    /// [`resolve_catalog`]).
    pub catalog: Option<Rc<Catalog>>,
}

impl Context<'_> {
    /// The upstream cannot be reached or answered nonsense (`log`: why).
    fn unavailable(&self, log: String) -> Error {
        Error::unreachable(&self.target.name, log)
    }
}

pub async fn connect(ctx: &Context<'_>, params: &[(&str, &str)]) -> Result<Connected, Error> {
    let target = ctx.target;
    let mut tcp = upstream::tcp(&target.upstream, ctx.config.gateway.connect_timeout)
        .await
        .map_err(|e| ctx.unavailable(e))?;
    if target.upstream_tls == UpstreamTls::Disable {
        let (greeting, pid, key, status) = authenticate(ctx, &mut tcp, params).await?;
        let catalog = resolve_catalog(ctx, &mut tcp).await?;
        return Ok(Connected {
            stream: Upstream::Plain(tcp),
            greeting,
            pid,
            key,
            status,
            catalog,
        });
    }
    // PostgreSQL asks first: `SSLRequest`, answered `S` or `N`.
    let mut req = Vec::with_capacity(8);
    encode::ssl_request(&mut req);
    let (res, _) = tcp.write_all(req).await;
    res.map_err(|e| ctx.unavailable(format!("SSLRequest: {e}")))?;
    let mut answer = Vec::with_capacity(1);
    let n = read_more_timeout(&mut tcp, &mut answer, LOGIN_TIMEOUT)
        .await
        .map_err(|e| ctx.unavailable(format!("SSLRequest: {e}")))?;
    if n != 1 || answer[0] != SSL_WILLING {
        return Err(ctx.unavailable("upstream refused TLS (target requires upstream_tls)".into()));
    }
    let fd = tcp.as_raw_fd();
    let timeout = ctx.config.gateway.connect_timeout;
    let mut s = upstream::tls_stream(ctx.plan.upstream_tls.as_ref(), target, tcp, timeout)
        .await
        .map_err(|e| ctx.unavailable(e))?;
    let (greeting, pid, key, status) = authenticate(ctx, &mut s, params).await?;
    let catalog = resolve_catalog(ctx, &mut s).await?;
    Ok(Connected {
        stream: Upstream::Tls(Box::new(s), fd),
        greeting,
        pid,
        key,
        status,
        catalog,
    })
}

/// The next complete upstream message in `buf` (read as needed, within the
/// login timeout); the caller drains it. `what` names the step in errors.
async fn next_frame<U: Io>(
    ctx: &Context<'_>,
    up: &mut U,
    buf: &mut Vec<u8>,
    what: &str,
) -> Result<Frame, Error> {
    read_message(up, buf, MAX_LOGIN_MESSAGE, LOGIN_TIMEOUT)
        .await
        .map_err(|e| {
            let log = match e {
                ReadError::Closed => format!("{what}: upstream closed"),
                ReadError::Io(e) => format!("{what}: {e}"),
                ReadError::Malformed(e) => format!("malformed upstream message: {e}"),
            };
            ctx.unavailable(log)
        })
}

async fn authenticate<U: Io>(
    ctx: &Context<'_>,
    up: &mut U,
    params: &[(&str, &str)],
) -> Result<(Vec<u8>, u32, u32, u8), Error> {
    let creds = ctx.target.credentials.as_ref();
    let user = creds.and_then(|c| c.user.as_deref()).unwrap_or("postgres");
    let password = creds.and_then(|c| c.password.as_ref()).map(|p| p.expose());
    let mut startup: Vec<(&str, &str)> = vec![("user", user)];
    startup.extend(params.iter().copied());
    if !params.iter().any(|(k, _)| *k == "database") {
        startup.push(("database", user));
    }
    let mut out = Vec::with_capacity(256);
    encode::startup_message(&mut out, &startup);
    let (res, _) = up.write_all(out).await;
    res.map_err(|e| ctx.unavailable(format!("startup: {e}")))?;

    let denied = |log: String| {
        Error::new(
            ErrorKind::UpstreamRefused,
            format!("Sluice could not log in to target `{}`", ctx.target.name),
            log,
        )
    };
    let need_password = || {
        password.ok_or_else(|| {
            denied("upstream asked for a password; the target has no password_env".into())
        })
    };

    let mut buf = Vec::with_capacity(4096);
    let mut greeting = Vec::with_capacity(512);
    let mut scram: Option<ScramClient> = None;
    let mut key = None;
    loop {
        let f = next_frame(ctx, up, &mut buf, "login").await?;
        let msg = backend::parse(f.tag, &buf[f.body()])
            .map_err(|e| ctx.unavailable(format!("malformed upstream message: {e}")))?;
        let mut reply = Vec::new();
        match msg {
            Backend::Authentication(Auth::Ok) => {}
            Backend::Authentication(Auth::CleartextPassword) => {
                encode::password(&mut reply, need_password()?.as_bytes())
            }
            Backend::Authentication(Auth::Md5Password { salt }) => {
                let hashed = encode::md5_password(user, need_password()?, salt);
                encode::password(&mut reply, hashed.as_bytes());
            }
            Backend::Authentication(Auth::Sasl(mechanisms)) => {
                if !Auth::mechanisms(mechanisms).any(|m| m == MECHANISM.as_bytes()) {
                    return Err(denied("upstream offers only SASL mechanisms Sluice does not speak (SCRAM-SHA-256-PLUS needs channel binding)".into()));
                }
                let mut nonce = [0u8; 18];
                getrandom::fill(&mut nonce).map_err(|e| denied(format!("random nonce: {e}")))?;
                use base64::Engine as _;
                let nonce = base64::engine::general_purpose::STANDARD.encode(nonce);
                let mut client = ScramClient::new(need_password()?, &nonce);
                encode::sasl_initial_response(
                    &mut reply,
                    MECHANISM,
                    client.client_first().as_bytes(),
                );
                scram = Some(client);
            }
            Backend::Authentication(Auth::SaslContinue(data)) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| denied("SASL continue without SASL".into()))?;
                let fin = client
                    .handle_server_first(data)
                    .map_err(|e| denied(format!("SCRAM: {e}")))?;
                encode::sasl_response(&mut reply, fin.as_bytes());
            }
            Backend::Authentication(Auth::SaslFinal(data)) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| denied("SASL final without SASL".into()))?;
                client
                    .handle_server_final(data)
                    .map_err(|e| denied(format!("SCRAM: {e}")))?;
            }
            Backend::Authentication(Auth::Other(code)) => {
                return Err(denied(format!(
                    "upstream asks for authentication method {code}, which Sluice does not speak"
                )));
            }
            Backend::ErrorResponse(fields) => {
                let text = String::from_utf8_lossy(fields.get(field::MESSAGE).unwrap_or_default())
                    .into_owned();
                let code = String::from_utf8_lossy(fields.get(field::CODE).unwrap_or_default())
                    .into_owned();
                // The client hears the upstream's own reason where it is about
                // what the client asked for or can act on (no such database or
                // role, a refused setting, too many connections, the server
                // starting up); PostgreSQL never puts a password in these.
                // Anything else stays in the gateway's log.
                let valid = code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric());
                let told = valid
                    && ["28", "3D", "42", "22", "53", "57", "0A"]
                        .iter()
                        .any(|class| code.starts_with(class));
                let log = format!("upstream error {code}: {text}");
                if !told {
                    return Err(denied(log));
                }
                return Err(Error::new(
                    ErrorKind::UpstreamRefused,
                    format!(
                        "Sluice could not log in to target `{}`: {text}",
                        ctx.target.name
                    ),
                    log,
                )
                .with_code(code.clone()));
            }
            Backend::ParameterStatus { name, value } if name == b"client_encoding" => {
                // A role's or database's default (`ALTER ROLE ... SET
                // client_encoding`) applies when the client names none: the
                // session must still start in an encoding the lexer reads.
                use sluice_protocols::postgres::encoding::{class, Class};
                let ok = match class(value) {
                    Class::Utf8 => true,
                    Class::Safe => ctx.target.masking.is_none(),
                    Class::Unsafe => false,
                };
                if !ok {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "the session on target `{}` would start with client_encoding {}, which Sluice cannot read safely: set PGCLIENTENCODING=UTF8",
                            ctx.target.name,
                            String::from_utf8_lossy(value)
                        ),
                        "upstream default client_encoding refused",
                    ));
                }
                greeting.extend_from_slice(&buf[..f.len]);
            }
            Backend::ParameterStatus { .. } | Backend::NoticeResponse(_) => {
                greeting.extend_from_slice(&buf[..f.len]);
            }
            Backend::BackendKeyData { pid, key: k } => key = Some((pid, k)),
            Backend::NegotiateProtocolVersion { .. } => {}
            Backend::ReadyForQuery(status) => {
                let (pid, k) = key.unwrap_or((0, 0));
                return Ok((greeting, pid, k, status));
            }
            other => {
                return Err(ctx.unavailable(format!(
                    "unexpected upstream message during login: {other:?}"
                )))
            }
        }
        buf.drain(..f.len);
        if !reply.is_empty() {
            let (res, _) = up.write_all(reply).await;
            res.map_err(|e| ctx.unavailable(format!("login: {e}")))?;
        }
    }
}

/// Resolves what the target's rules need of this upstream's catalog, with
/// catalog queries right after login:
///
/// - `table.column` rules: the columns they name (table OID and column number,
///   which every `RowDescription` carries), so a rule follows its column under
///   any alias. Rules keep applying by column name everywhere else too
///   (another table, a view, a partition, a copy, an expression): a lookup that
///   is stale or wrong can only ever add masking.
/// - Under strict column rules: the relations holding a protected column, and
///   the views built on one (every column of such a view is masked, and
///   counts as protected in statements that name the view).
/// - Under guardrails: the functions defined in the database, whose calls are
///   opaque unless the guardrails name them.
///
/// `None` when the target has none of these. A failed lookup leaves the
/// rules by name, makes every relation count as protected under strict rules,
/// and every call of a function not built in opaque (fail closed). Every name
/// in the queries is schema-qualified to `pg_catalog`, so objects on the
/// search path cannot stand in for them; names are compared in Rust. A broken
/// upstream is an error like any other at login.
async fn resolve_catalog<U: Io>(
    ctx: &Context<'_>,
    up: &mut U,
) -> Result<Option<Rc<Catalog>>, Error> {
    let profile = ctx.plan.masking.as_ref();
    let strict = ctx.plan.strict.as_deref().cloned();
    let rules: Vec<(&str, &str, Style)> = profile
        .as_ref()
        .map(|p| p.table_rules().collect())
        .unwrap_or_default();
    let guardrails = ctx
        .target
        .guardrails
        .as_ref()
        .and_then(|g| ctx.config.guardrails.get(g));
    if rules.is_empty() && strict.is_none() && guardrails.is_none() {
        return Ok(None);
    }
    // The answer holds for one server, database and login.
    let t = ctx.target;
    let user = t.credentials.as_ref().and_then(|c| c.user.as_deref());
    // Functions are looked up under guardrails and under strict column rules
    // (a function can read any column); only the guardrails name exceptions.
    let allowed = match (guardrails, &strict) {
        (Some(g), _) => Some(g.functions.as_slice()),
        (None, Some(_)) => Some(&[][..]),
        (None, None) => None,
    };
    let key = format!(
        "{}\0{}\0{:?}\0{}\0{:?}\0{}\0{allowed:?}",
        t.name,
        t.upstream,
        user,
        ctx.database,
        rules,
        strict.is_some()
    );
    if let Some(hit) = ctx.shard.catalogs().get(&key) {
        return Ok(Some(hit));
    }
    let failed = |error: String| {
        warn!(
            "catalog_lookup_failed",
            target = ctx.target.name,
            error = error
        );
    };
    let mut found = Catalog::default();
    let mut complete = true;
    if !rules.is_empty() {
        match table_rules(ctx, up, &rules).await? {
            Ok(columns) => found.columns = columns,
            Err(e) => {
                failed(e);
                complete = false;
            }
        }
    }
    if let Some(allowed) = allowed {
        match user_functions(ctx, up, strict.is_some()).await? {
            Ok(all) => {
                found.user_functions = all
                    .into_iter()
                    .filter(|(schema, name)| {
                        !allowed
                            .iter()
                            .any(|a| *a == *name || *a == format!("{schema}.{name}"))
                    })
                    .collect()
            }
            Err(e) => {
                warn!(
                    "user_functions_unresolved",
                    target = ctx.target.name,
                    error = e
                );
                complete = false;
                // Unknown: any call of a function that is not built in is opaque.
                found.user_functions = vec![("*".into(), "*".into())];
            }
        }
    }
    if let (Some(fallback), Some(profile)) = (strict, profile) {
        let names: Vec<(&str, Style)> = profile.column_names().collect();
        found.protected = Some(Rc::new(
            match protected_relations(ctx, up, &names).await? {
                Ok((protected, view_columns)) => {
                    found.columns.extend(view_columns);
                    protected
                }
                Err(e) => {
                    failed(e);
                    complete = false;
                    fallback
                }
            },
        ));
    }
    debug!(
        "catalog_resolved",
        target = ctx.target.name,
        rules = rules.len(),
        columns = found.columns.len()
    );
    let found = Rc::new(found);
    if complete {
        ctx.shard.catalogs().put(key, found.clone());
    }
    Ok(Some(found))
}

/// A name as a string literal; one that would need more than doubled quotes
/// is not put in a query.
fn literal(name: &str) -> Option<String> {
    (!name.contains(['\\', '\0'])).then(|| format!("'{}'", name.replace('\'', "''")))
}

/// The columns `table.column` rules name: (table OID, column number, style).
async fn table_rules<U: Io>(
    ctx: &Context<'_>,
    up: &mut U,
    rules: &[(&str, &str, Style)],
) -> Result<Result<Vec<(u32, i16, Style)>, String>, Error> {
    let (mut tables, mut columns) = (Vec::new(), Vec::new());
    for (table, column, _) in rules {
        let relname = table.rsplit('.').next().unwrap_or(table);
        let (Some(t), Some(c)) = (literal(relname), literal(column)) else {
            return Ok(Err(format!(
                "rule `{table}.{column}` has a name Sluice does not quote"
            )));
        };
        tables.push(t);
        columns.push(c);
    }
    // Filtered loosely in SQL (lower() may fold more than ASCII), exactly in Rust.
    let sql = format!(
        "SELECT a.attrelid::pg_catalog.int8, a.attnum, n.nspname, c.relname, a.attname \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
         WHERE a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped \
         AND pg_catalog.lower(c.relname) OPERATOR(pg_catalog.=) \
         ANY (ARRAY[{}]::pg_catalog.text[]) \
         AND pg_catalog.lower(a.attname) OPERATOR(pg_catalog.=) \
         ANY (ARRAY[{}]::pg_catalog.text[])",
        tables.join(","),
        columns.join(",")
    );
    let rows = match catalog_query(ctx, up, &sql).await? {
        Ok(rows) => rows,
        Err(e) => return Ok(Err(e)),
    };
    let mut found = Vec::new();
    let mut matched = vec![false; rules.len()];
    for v in &rows {
        let lower = |i: usize| v.get(i).map(|s| s.to_ascii_lowercase());
        let parsed = (
            v.first().and_then(|t| t.parse::<u32>().ok()),
            v.get(1).and_then(|t| t.parse::<i16>().ok()),
            lower(2),
            lower(3),
            lower(4),
        );
        let (Some(oid), Some(attnum), Some(ns), Some(rel), Some(col)) = parsed else {
            return Ok(Err("unexpected catalog row".to_string()));
        };
        let names = |t: &str| {
            *t == *rel
                || t.strip_prefix(ns.as_str())
                    .and_then(|r| r.strip_prefix('.'))
                    == Some(rel.as_str())
        };
        if let Some(i) = rules.iter().position(|(t, c, _)| *c == col && names(t)) {
            matched[i] = true;
            found.push((oid, attnum, rules[i].2));
        }
    }
    for ((table, column, _), _) in rules.iter().zip(&matched).filter(|(_, m)| !**m) {
        // A misspelt or missing table: its rule matches by name only.
        warn!(
            "masking_table_rule_unmatched",
            target = ctx.target.name,
            rule = format!("{table}.{column}")
        );
    }
    Ok(Ok(found))
}

/// Under strict column rules: the relations holding a column under a rule,
/// and the views (plain or materialized, over any depth of views) built on
/// such a relation (on any of its columns, or on its whole row: which view
/// column carries what is not recorded), each of whose columns is then
/// masked with the strongest style.
async fn protected_relations<U: Io>(
    ctx: &Context<'_>,
    up: &mut U,
    names: &[(&str, Style)],
) -> Result<Result<(Protected, Vec<(u32, i16, Style)>), String>, Error> {
    let Some(quoted) = names
        .iter()
        .map(|(n, _)| literal(n))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(Err("a column rule has a name Sluice does not quote".into()));
    };
    let eq = "OPERATOR(pg_catalog.=)";
    let sql = format!(
        "WITH RECURSIVE prot(relid, attnum, via_view) AS ( \
           SELECT a.attrelid, a.attnum, false FROM pg_catalog.pg_attribute a \
           WHERE a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped \
           AND pg_catalog.lower(a.attname) {eq} ANY (ARRAY[{}]::pg_catalog.text[]) \
         UNION \
           SELECT r.ev_class, v.attnum, true FROM prot p \
           JOIN pg_catalog.pg_depend d ON d.refobjid {eq} p.relid \
             AND d.classid {eq} 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
           JOIN pg_catalog.pg_rewrite r ON r.oid {eq} d.objid \
             AND r.rulename {eq} '_RETURN' AND r.ev_class OPERATOR(pg_catalog.<>) p.relid \
           JOIN pg_catalog.pg_attribute v ON v.attrelid {eq} r.ev_class \
             AND v.attnum OPERATOR(pg_catalog.>) 0 AND NOT v.attisdropped) \
         SELECT p.relid::pg_catalog.int8, p.attnum, c.relname, a.attname, p.via_view \
         FROM prot p JOIN pg_catalog.pg_class c ON c.oid {eq} p.relid \
         JOIN pg_catalog.pg_attribute a ON a.attrelid {eq} p.relid AND a.attnum {eq} p.attnum",
        quoted.join(",")
    );
    let rows = match catalog_query(ctx, up, &sql).await? {
        Ok(rows) => rows,
        Err(e) => return Ok(Err(e)),
    };
    // The strongest style of the rules: what a view's columns get.
    let strongest = names
        .iter()
        .map(|(_, s)| *s)
        .min_by_key(|s| match s {
            Style::Full => 0,
            Style::Redact => 1,
            Style::Hash(_) => 2,
            Style::Last4 => 3,
        })
        .unwrap_or(Style::Full);
    let mut protected = Protected {
        columns: names.iter().map(|(n, _)| n.as_bytes().into()).collect(),
        relations: Some(Vec::new()),
        ..Protected::default()
    };
    let mut oids: Vec<u32> = Vec::new();
    let mut masked = Vec::new();
    for v in &rows {
        let (Some(oid), Some(attnum), Some(rel), Some(col), Some(via_view)) = (
            v.first().and_then(|t| t.parse::<u32>().ok()),
            v.get(1).and_then(|t| t.parse::<i16>().ok()),
            v.get(2)
                .map(|s| s.to_ascii_lowercase().into_bytes().into_boxed_slice()),
            v.get(3)
                .map(|s| s.to_ascii_lowercase().into_bytes().into_boxed_slice()),
            v.get(4).map(|s| s == "t"),
        ) else {
            return Ok(Err("unexpected catalog row".to_string()));
        };
        let relations = protected.relations.get_or_insert_with(Vec::new);
        if !relations.contains(&rel) {
            relations.push(rel.clone());
        }
        if !oids.contains(&oid) {
            oids.push(oid);
        }
        if via_view {
            masked.push((oid, attnum, strongest));
            match protected.views.iter_mut().find(|(v, _)| *v == rel) {
                Some((_, cols)) => cols.push(col),
                None => protected.views.push((rel, vec![col])),
            }
        }
    }
    // Every column of those relations: `t.x` for any other `x` calls a
    // function of the whole row (attribute notation).
    if !oids.is_empty() {
        let list: Vec<String> = oids.iter().map(u32::to_string).collect();
        let sql = format!(
            "SELECT c.relname, a.attname FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid {eq} a.attrelid \
             WHERE a.attrelid {eq} ANY (ARRAY[{}]::pg_catalog.oid[]) \
             AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped",
            list.join(",")
        );
        let rows = match catalog_query(ctx, up, &sql).await? {
            Ok(rows) => rows,
            Err(e) => return Ok(Err(e)),
        };
        for r in rows {
            let [rel, col] = r.as_slice() else {
                return Ok(Err("unexpected catalog row".to_string()));
            };
            let rel = rel.to_ascii_lowercase().into_bytes().into_boxed_slice();
            let col = col.to_ascii_lowercase().into_bytes().into_boxed_slice();
            match protected
                .relation_columns
                .iter_mut()
                .find(|(r, _)| *r == rel)
            {
                Some((_, cols)) => cols.push(col),
                None => protected.relation_columns.push((rel, vec![col])),
            }
        }
    }
    Ok(Ok((protected, masked)))
}

/// Functions defined in the database: not built in (`pg_catalog`,
/// `information_schema`) and, unless `extensions`, not installed by an
/// extension (under strict column rules they count too: `pageinspect`,
/// `pgstattuple` and the like read a relation named in a string).
async fn user_functions<U: Io>(
    ctx: &Context<'_>,
    up: &mut U,
    extensions: bool,
) -> Result<Result<Vec<(String, String)>, String>, Error> {
    let (eq, ne) = ("OPERATOR(pg_catalog.=)", "OPERATOR(pg_catalog.<>)");
    let sql = format!(
        "SELECT DISTINCT n.nspname, p.proname FROM pg_catalog.pg_proc p \
         JOIN pg_catalog.pg_namespace n ON n.oid {eq} p.pronamespace \
         WHERE n.nspname {ne} 'pg_catalog' AND n.nspname {ne} 'information_schema' \
         AND ({extensions} OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
           WHERE d.classid {eq} 'pg_catalog.pg_proc'::pg_catalog.regclass \
           AND d.objid {eq} p.oid AND d.deptype {eq} 'e'))"
    );
    Ok(catalog_query(ctx, up, &sql).await?.map(|rows| {
        rows.into_iter()
            .filter_map(|r| match r.as_slice() {
                [schema, name] => Some((schema.to_ascii_lowercase(), name.to_ascii_lowercase())),
                _ => None,
            })
            .collect()
    }))
}

/// Runs one catalog query; its rows as text (NULL as empty), or the server's
/// error message. Reads to the ReadyForQuery whatever comes, so the session
/// starts in step.
async fn catalog_query<U: Io>(
    ctx: &Context<'_>,
    up: &mut U,
    sql: &str,
) -> Result<Result<Vec<Vec<String>>, String>, Error> {
    let mut out = Vec::with_capacity(sql.len() + 8);
    encode::query(&mut out, sql.as_bytes());
    let (res, _) = up.write_all(out).await;
    res.map_err(|e| ctx.unavailable(format!("masking catalog query: {e}")))?;
    let mut rows = Vec::new();
    let mut error = None;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let f = next_frame(ctx, up, &mut buf, "masking catalog query").await?;
        let body = &buf[f.body()];
        let msg = backend::parse(f.tag, body)
            .map_err(|e| ctx.unavailable(format!("malformed upstream message: {e}")))?;
        match msg {
            Backend::DataRow(row) => rows.push(
                row.ranges()
                    .map(|r| String::from_utf8_lossy(r.map_or(&[][..], |r| &body[r])).into_owned())
                    .collect(),
            ),
            Backend::ErrorResponse(fields) => {
                error = Some(
                    String::from_utf8_lossy(fields.get(field::MESSAGE).unwrap_or_default())
                        .into_owned(),
                );
            }
            Backend::ReadyForQuery(_) => break,
            _ => {}
        }
        buf.drain(..f.len);
    }
    Ok(match error {
        Some(e) => Err(e),
        None => Ok(rows),
    })
}
