//! The web console on the admin listener: approvers decide held commands,
//! auditors search the log. HTML, CSS and a little JavaScript, compiled into
//! the binary (nothing fetched at run time); every page reads without
//! JavaScript, which only adds live updates and local times.
//!
//! - Sign-in: an access token pasted once (`POST /console/signin`), or a
//!   one-time link (`sluice console link`, valid for a minute, single use).
//!   Either makes a session: a random id in an `HttpOnly`, `SameSite=Strict`
//!   cookie, ending when the token would have expired.
//! - Every state-changing request carries the session's CSRF token and, when
//!   the browser sends one, an `Origin` of this listener; the pages carry a
//!   strict Content-Security-Policy (scripts and styles from here only).
//! - Votes go through the same approval service as the API and the CLI: the
//!   segregation-of-duties rules are the store's, whatever the page shows.

use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use sluice_protocols::http;

use super::approvals::may_see;
use crate::approvals::{Decision, Request, State};
use crate::identity::sessions::LINK_TTL;
use crate::identity::Identity;
use crate::shard::Shard;

const COOKIE: &str = "sluice_console";
/// Largest audit export the console builds (the CLI has no limit).
const MAX_EXPORT: usize = 64 << 20;
/// Largest recording the console shows in the page.
const MAX_RECORDING: u64 = 16 << 20;
/// The furthest page back the console pages (older records: narrow the search).
const MAX_PAGE: usize = 2000;
/// Audit records on one page.
const PAGE: usize = 50;
/// An event stream ends after this long (the browser reconnects).
const STREAM_FOR: Duration = Duration::from_secs(300);

const CSS: &str = include_str!("console/console.css");
const JS: &str = include_str!("console/console.js");

/// Is this a console path (served here, not by the JSON API)?
pub fn handles(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

/// `GET /console/events`: answered by [`events`], which keeps the connection.
pub fn is_event_stream(req: &http::Request<'_, '_>) -> bool {
    req.method == "GET" && req.path() == "/console/events"
}

pub async fn route(shard: &Shard, req: &http::Request<'_, '_>, body: &[u8]) -> Vec<u8> {
    let path = req.path();
    let session = session_of(shard, req);
    match (req.method, path) {
        ("GET", "/" | "/console" | "/console/") => match session {
            Some(_) => redirect("/console/approvals", None),
            None => redirect("/console/signin", None),
        },
        ("GET", "/console/console.css") => asset("text/css", CSS),
        ("GET", "/console/console.js") => asset("text/javascript", JS),
        ("GET", "/console/signin") => page(200, "Sign in", None, &signin_form(shard, None)),
        ("GET", "/console/oidc/start") => super::oidc::start(shard).await,
        ("GET", "/console/oidc/callback") => super::oidc::callback(shard, req).await,
        ("POST", "/console/signin") => match same_origin(shard, req) {
            true => signin(shard, body).await,
            false => page(403, "Refused", None, CROSS_SITE),
        },
        ("POST", "/console/signout") if same_origin(shard, req) => {
            if let (Some((_, csrf)), Some(id)) = (&session, cookie(req)) {
                if form_field(body, "csrf").as_deref() == Some(csrf.as_str()) {
                    shard.shared.console.close(&id);
                }
            }
            redirect("/console/signin", Some(&clear_cookie()))
        }
        ("POST", "/api/console/link") => make_link(shard, req).await,
        // Opening a link only asks: a link scanner or a chat preview that
        // fetches it spends nothing. The button (a same-origin POST) signs in.
        ("GET", p) if p.starts_with("/console/link/") => {
            let code = &p["/console/link/".len()..];
            match shard.shared.console.link_valid(code) {
                true => page(
                    200,
                    "Sign in",
                    None,
                    &format!(
                        "<form method=\"post\" action=\"/console/link/{}\" class=\"signin link\"><p>This one-time link signs you in to the console.</p><button type=\"submit\">Sign in</button></form>",
                        esc(code)
                    ),
                ),
                false => link_gone(shard),
            }
        }
        ("POST", p) if p.starts_with("/console/link/") => {
            if !same_origin(shard, req) {
                return page(403, "Refused", None, CROSS_SITE);
            }
            let code = &p["/console/link/".len()..];
            match shard.shared.console.redeem(code) {
                Some(identity) => sign_in_as(shard, identity, "link", false),
                None => link_gone(shard),
            }
        }
        (_, _) => {
            let Some((identity, csrf)) = session else {
                let listing = query_param(req.query(), "part").is_some();
                return match req.method {
                    // The live list's fetch: say so, never a page to insert.
                    "GET" if listing => fragment_status(401, "<p class=\"error\">Your session has ended: <a href=\"/console/signin\">sign in again</a>.</p>"),
                    "GET" => redirect("/console/signin", None),
                    _ => page(
                        401,
                        "Signed out",
                        None,
                        "<p class=\"error\">Your session has ended: sign in again.</p>",
                    ),
                };
            };
            signed_in(shard, req, body, &identity, &csrf).await
        }
    }
}

async fn signed_in(
    shard: &Shard,
    req: &http::Request<'_, '_>,
    body: &[u8],
    identity: &Identity,
    csrf: &str,
) -> Vec<u8> {
    let path = req.path();
    if req.method == "POST" {
        // Only forms of this console, from this console.
        let origin_ok = same_origin(shard, req);
        let token_ok =
            form_field(body, "csrf").is_some_and(|t| constant_eq(t.as_bytes(), csrf.as_bytes()));
        if !origin_ok || !token_ok {
            crate::warn!(
                "console_form_refused",
                subject = identity.subject,
                path = path,
                origin = String::from_utf8_lossy(req.header("origin").unwrap_or_default()),
                origin_ok = origin_ok,
                csrf_ok = token_ok
            );
            return page(
                403,
                "Refused",
                Some((identity, csrf)),
                "<p class=\"error\">This form did not come from this console (its CSRF token or origin does not match): nothing was done.</p>",
            );
        }
    }
    match (req.method, path) {
        ("GET", "/console/approvals") => {
            let part = query_param(req.query(), "part");
            let list = approvals_list(shard, identity, csrf).await;
            if part.as_deref() == Some("list") {
                return fragment(&list);
            }
            // The flash names what this console did; nothing a link can word.
            let id = query_param(req.query(), "id").and_then(|i| i.parse::<u64>().ok());
            let done = match (query_param(req.query(), "done").as_deref(), id) {
                (Some("approved"), Some(id)) => format!("Request {id} approved."),
                (Some("denied"), Some(id)) => format!("Request {id} denied."),
                (Some("counted"), Some(id)) => {
                    format!("Your approval of request {id} is counted; it needs more.")
                }
                _ => String::new(),
            };
            let flash = match done.is_empty() {
                true => String::new(),
                false => format!("<p class=\"flash\" role=\"status\">{done}</p>"),
            };
            page(
                200,
                "Approvals",
                Some((identity, csrf)),
                &format!("{flash}<div id=\"approvals\" data-live=\"/console/approvals?part=list\">{list}</div>"),
            )
        }
        ("POST", p) if p.starts_with("/console/approvals/") => {
            vote(shard, p, body, identity, csrf).await
        }
        ("GET", "/console/audit") => audit_page(shard, req, identity, csrf).await,
        ("GET", "/console/audit/export") => audit_export(shard, req, identity).await,
        ("POST", "/console/audit/verify") => audit_verify(shard, identity, csrf).await,
        ("GET", "/console/sessions") => sessions_page(shard, identity, csrf).await,
        ("GET", p) if p.starts_with("/console/sessions/") => {
            let rest = p["/console/sessions/".len()..].to_owned();
            session_page(shard, rest, identity, csrf).await
        }
        _ => page(
            404,
            "Not found",
            Some((identity, csrf)),
            "<p>No such page.</p>",
        ),
    }
}

const CROSS_SITE: &str =
    "<p class=\"error\">This form did not come from this console: nothing was done.</p>";

/// Does a POST come from this console? Browsers send `Origin` on every POST;
/// it must name the console's own address (`[console] url`, else this
/// request's `Host`). A client that sends none (curl) is not a browser
/// another site could drive.
fn same_origin(shard: &Shard, req: &http::Request<'_, '_>) -> bool {
    let Some(origin) = req
        .header("origin")
        .and_then(|o| std::str::from_utf8(o).ok())
    else {
        // Absent: not a browser another site drives (every current browser
        // sends it on a POST). Not UTF-8: refused.
        return req.header("origin").is_none();
    };
    let origin = origin_key(origin);
    let host = std::str::from_utf8(req.header("host").unwrap_or_default()).unwrap_or_default();
    let by_host = ["http://", "https://"]
        .iter()
        .any(|scheme| origin == origin_key(&format!("{scheme}{host}")));
    let by_url = shard
        .generation()
        .config
        .console
        .as_ref()
        .is_some_and(|c| origin == origin_key(&c.url));
    by_host || by_url
}

/// An origin as browsers compare them: lower case, without a default port or
/// a trailing slash.
fn origin_key(origin: &str) -> String {
    let o = origin.trim_end_matches('/').to_ascii_lowercase();
    match (o.strip_suffix(":443"), o.strip_suffix(":80")) {
        (Some(rest), _) if rest.starts_with("https://") => rest.to_owned(),
        (_, Some(rest)) if rest.starts_with("http://") => rest.to_owned(),
        _ => o,
    }
}

/// Opens a session for `identity` and lands on the approvals. After a
/// sign-in that came from another site (the identity provider's redirect),
/// the landing is a page of this origin that moves on by itself: a
/// `SameSite=Strict` cookie rides only on a navigation this site started.
pub(super) fn sign_in_as(
    shard: &Shard,
    identity: Identity,
    how: &str,
    cross_site: bool,
) -> Vec<u8> {
    let Some((id, _)) = shard.shared.console.open(identity.clone()) else {
        return page(
            503,
            "Sign in",
            None,
            &signin_form(shard, Some("Too many sessions are open; try again later.")),
        );
    };
    crate::info!("console_signin", subject = identity.subject, how = how);
    let cookie = set_cookie(shard, &id);
    if !cross_site {
        return redirect("/console/approvals", Some(&cookie));
    }
    let html = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url=/console/approvals\"><title>Signed in · Sluice</title></head><body><p>Signed in. <a href=\"/console/approvals\">Continue to the approvals</a>.</p></body></html>";
    let headers = format!(
        "set-cookie: {cookie}\r\nset-cookie: {}\r\n",
        super::oidc::clear_flow_cookie()
    );
    respond(200, HTML, &headers, html.as_bytes())
}

fn link_gone(shard: &Shard) -> Vec<u8> {
    page(
        410,
        "Link used or expired",
        None,
        &format!(
            "<p class=\"error\">This sign-in link was used already or has expired (links last {LINK_TTL} seconds and work once).</p>{}",
            signin_form(shard, None)
        ),
    )
}

/// The session a request's cookie names, if it is open.
fn session_of(shard: &Shard, req: &http::Request<'_, '_>) -> Option<(Identity, String)> {
    shard.shared.console.get(&cookie(req)?)
}

fn cookie(req: &http::Request<'_, '_>) -> Option<String> {
    cookie_value(req, COOKIE).filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The value of the cookie `name` the request carries.
pub(super) fn cookie_value(req: &http::Request<'_, '_>, name: &str) -> Option<String> {
    let header = std::str::from_utf8(req.header("cookie")?).ok()?;
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

pub(super) fn set_cookie(shard: &Shard, id: &str) -> String {
    let secure = if shard.generation().config.gateway.admin_tls {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn signin(shard: &Shard, body: &[u8]) -> Vec<u8> {
    let Some(token) = form_field(body, "token")
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
    else {
        return page(
            400,
            "Sign in",
            None,
            &signin_form(shard, Some("Paste an access token.")),
        );
    };
    match shard.authenticate(&token).await {
        Ok(identity) => sign_in_as(shard, (*identity).clone(), "token", false),
        Err(e) => page(
            401,
            "Sign in",
            None,
            &signin_form(shard, Some(&format!("That token was refused: {e}"))),
        ),
    }
}

/// `POST /api/console/link` with a bearer token: a one-time sign-in link.
async fn make_link(shard: &Shard, req: &http::Request<'_, '_>) -> Vec<u8> {
    let identity = match super::caller(shard, req).await {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    let Some(code) = shard.shared.console.link((*identity).clone()) else {
        return super::json(
            503,
            "Service Unavailable",
            r#"{"error":"too many sign-in links are waiting; try again in a minute"}"#,
        );
    };
    super::json(
        200,
        "OK",
        &serde_json::json!({ "path": format!("/console/link/{code}"), "expires_in": LINK_TTL })
            .to_string(),
    )
}

async fn vote(shard: &Shard, path: &str, body: &[u8], identity: &Identity, csrf: &str) -> Vec<u8> {
    let rest = &path["/console/approvals/".len()..];
    let (id, action) = match rest.split_once('/') {
        Some((id, a @ ("approve" | "deny"))) => (id, a),
        _ => {
            return page(
                404,
                "Not found",
                Some((identity, csrf)),
                "<p>No such action.</p>",
            )
        }
    };
    let Ok(id) = id.parse::<u64>() else {
        return page(
            400,
            "Bad request",
            Some((identity, csrf)),
            "<p>An approval id is a number.</p>",
        );
    };
    let comment = form_field(body, "comment")
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    if comment.as_ref().is_some_and(|c| c.len() > 1024) {
        return page(
            400,
            "Bad request",
            Some((identity, csrf)),
            "<p class=\"error\">A comment is at most 1024 bytes.</p>",
        );
    }
    let decision = if action == "approve" {
        Decision::Approve
    } else {
        Decision::Deny
    };
    let admin = super::is_admin(shard, identity);
    let voted =
        super::approvals::cast_vote(shard, identity, admin, id, decision, comment, "console").await;
    match voted {
        Ok(v) => {
            let done = match (decision, v.decided) {
                (Decision::Deny, _) => "denied",
                (Decision::Approve, true) => "approved",
                (Decision::Approve, false) => "counted",
            };
            redirect(&format!("/console/approvals?done={done}&id={id}"), None)
        }
        Err(e) => {
            let (status, _) = super::approvals::vote_status(&e);
            page(
                status,
                "Refused",
                Some((identity, csrf)),
                &format!("<p class=\"error\">{}</p><p><a href=\"/console/approvals\">Back to approvals</a></p>", esc(&e.to_string())),
            )
        }
    }
}

/// The pending requests the caller may see, then the recently decided.
async fn approvals_list(shard: &Shard, identity: &Identity, csrf: &str) -> String {
    let approvals = &shard.shared.approvals;
    let list = |state| super::approvals::answer(approvals.list(state));
    // Pending ones listed apart: however long the history, none is left out.
    let (pending, all) = match (list(Some(State::Pending)).await, list(None).await) {
        (Ok(p), Ok(a)) => (p, a),
        (Err(e), _) | (_, Err(e)) => {
            return format!("<p class=\"error\">{}</p>", esc(&e.to_string()))
        }
    };
    let admin = super::is_admin(shard, identity);
    let visible: Vec<&Request> = all
        .iter()
        .filter(|r| admin || may_see(identity, r))
        .collect();
    let pending: Vec<&Request> = pending
        .iter()
        .filter(|r| admin || may_see(identity, r))
        .collect();
    let mut out = String::new();
    let _ = write!(
        out,
        "<h2>Pending <span class=\"count\">{}</span></h2>",
        pending.len()
    );
    if pending.is_empty() {
        out.push_str("<p class=\"empty\">Nothing waits for a decision.</p>");
    }
    for r in &pending {
        request_card(&mut out, r, identity, csrf);
    }
    out.push_str("<h2>Decided</h2><table class=\"history\"><thead><tr><th>#</th><th>State</th><th>Requester</th><th>Target</th><th>What</th><th>Decided by</th><th>When</th></tr></thead><tbody>");
    for r in visible
        .iter()
        .filter(|r| r.state != State::Pending)
        .take(50)
    {
        let by = match (&r.denied_by, r.approvals.is_empty()) {
            (Some(d), _) => d.clone(),
            (None, false) => r
                .approvals
                .iter()
                .map(|v| v.subject.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            (None, true) => "—".into(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"state {}\">{}{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}{}</td><td>{}</td></tr>",
            r.id,
            r.state.as_str(),
            r.state.as_str(),
            if r.used { " (used)" } else { "" },
            esc(&r.requester),
            esc(&r.target),
            esc(&short(&r.statement, 120)),
            esc(&by),
            r.reason.as_ref().map(|c| format!(": “{}”", esc(c))).unwrap_or_default(),
            time(r.decided_at.unwrap_or(r.created_at)),
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn request_card(out: &mut String, r: &Request, identity: &Identity, csrf: &str) {
    let own = r.requester == identity.subject;
    let eligible = identity.groups.iter().any(|g| r.approvers.contains(g));
    let voted: Vec<&str> = r.approvals.iter().map(|v| v.subject.as_str()).collect();
    let _ = write!(
        out,
        "<article class=\"request\" id=\"request-{id}\"><header><h3>#{id} {summary} on {target}</h3>\
         <p class=\"meta\">requested by <strong>{requester}</strong> {age} · {protocol}{database}</p></header>\
         <pre class=\"statement\">{statement}</pre>",
        id = r.id,
        summary = esc(&r.summary),
        target = esc(&r.target),
        requester = esc(&r.requester),
        age = time(r.created_at),
        protocol = esc(r.protocol),
        database = if r.database.is_empty() { String::new() } else { format!(" · database {}", esc(&r.database)) },
        statement = esc(&r.statement),
    );
    if !r.params.is_empty() {
        out.push_str("<ol class=\"params\">");
        for p in &r.params {
            let _ = write!(out, "<li><code>{}</code></li>", esc(p));
        }
        out.push_str("</ol>");
    }
    match &r.justification {
        Some(why) => {
            let _ = write!(
                out,
                "<p class=\"justification\"><span>Reason:</span> {}</p>",
                esc(why)
            );
        }
        None => out.push_str("<p class=\"justification none\">No reason given.</p>"),
    }
    let _ = write!(
        out,
        "<p class=\"quorum\">{} of {} approval{}{} · approvers: {} · expires {}</p>",
        voted.len(),
        r.quorum,
        if r.quorum == 1 { "" } else { "s" },
        if voted.is_empty() {
            String::new()
        } else {
            format!(" ({})", esc(&voted.join(", ")))
        },
        esc(&r.approvers.join(", ")),
        time(r.expires_at),
    );
    if own {
        out.push_str("<p class=\"own\">This is your request: someone else decides it.</p>");
    } else if !eligible {
        out.push_str("<p class=\"own\">You are not in an approver group of this request.</p>");
    } else {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/console/approvals/{id}/approve\" class=\"vote\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label for=\"comment-{id}\">Comment</label>\
             <input type=\"text\" id=\"comment-{id}\" name=\"comment\" maxlength=\"1024\" autocomplete=\"off\">\
             <button type=\"submit\" class=\"approve\">Approve</button>\
             <button type=\"submit\" class=\"deny\" formaction=\"/console/approvals/{id}/deny\">Deny</button></form>",
            id = r.id,
        );
    }
    out.push_str("</article>");
}

fn audit_dir(shard: &Shard) -> Option<std::path::PathBuf> {
    let config = shard.generation().config.clone();
    config
        .audit
        .as_ref()
        .map(|a| std::path::PathBuf::from(&a.dir))
}

/// The filters a search page was given, as `(key, value)`.
type Given = Vec<(&'static str, String)>;

/// The search filters from the query string (the same as `sluice audit search`).
fn filters(req: &http::Request<'_, '_>) -> Result<(crate::audit::verify::Filter, Given), String> {
    let q = req.query();
    let mut given = Vec::new();
    for key in [
        "user", "target", "kind", "decision", "type", "since", "until", "text",
    ] {
        if let Some(v) = query_param(q, key).filter(|v| !v.is_empty()) {
            given.push((key, v));
        }
    }
    let get = |k: &str| given.iter().find(|(g, _)| *g == k).map(|(_, v)| v.clone());
    let time = |k: &str| {
        get(k)
            .map(|v| crate::audit::verify::parse_time(&v))
            .transpose()
    };
    Ok((
        crate::audit::verify::Filter {
            user: get("user"),
            target: get("target"),
            kind: get("kind"),
            decision: get("decision"),
            since_ms: time("since")?,
            until_ms: time("until")?,
            text: get("text"),
            record_type: get("type"),
        },
        given,
    ))
}

/// The audit log's directory, if the caller may read it; else the page
/// that says why.
fn audit_access(
    shard: &Shard,
    identity: &Identity,
    csrf: &str,
    title: &str,
) -> Result<std::path::PathBuf, Vec<u8>> {
    if !super::is_admin(shard, identity) {
        return Err(page(
            403,
            title,
            Some((identity, csrf)),
            "<p class=\"error\">The audit log and recordings are for the admin groups.</p>",
        ));
    }
    audit_dir(shard).ok_or_else(|| {
        page(
            200,
            title,
            Some((identity, csrf)),
            "<p>This gateway keeps no audit log (`[audit]` is not configured).</p>",
        )
    })
}

/// Runs file work (a log search, a recording) on a thread of its own: the
/// shard goes on serving traffic meanwhile.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    /// Console work running at once; more is refused, never queued.
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    const AT_ONCE: usize = 8;
    if RUNNING.fetch_add(1, Ordering::AcqRel) >= AT_ONCE {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
        return Err("the console is busy; try again in a moment".into());
    }
    let (tx, rx) = flume::bounded(1);
    let spawned = std::thread::Builder::new()
        .name("sluice-console".into())
        .spawn(move || {
            let _ = tx.send(f());
            RUNNING.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(e) = spawned {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
        return Err(e.to_string());
    }
    match monoio::time::timeout(Duration::from_secs(60), rx.recv_async()).await {
        Ok(Ok(r)) => r,
        _ => Err("the work did not finish in time".into()),
    }
}

async fn audit_page(
    shard: &Shard,
    req: &http::Request<'_, '_>,
    identity: &Identity,
    csrf: &str,
) -> Vec<u8> {
    let dir = match audit_access(shard, identity, csrf, "Audit") {
        Ok(d) => d,
        Err(reply) => return reply,
    };
    let (filter, given) = match filters(req) {
        Ok(f) => f,
        Err(e) => {
            return page(
                400,
                "Audit",
                Some((identity, csrf)),
                &format!("<p class=\"error\">{}</p>", esc(&e)),
            )
        }
    };
    let page_no: usize = query_param(req.query(), "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
        .min(MAX_PAGE);
    // Newest first: only the newest (page + 1) pages are kept while reading.
    let keep = (page_no + 1) * PAGE;
    let searched = blocking(move || {
        let mut window = std::collections::VecDeque::with_capacity(keep.min(10_000));
        let total = crate::audit::verify::search(&dir, &filter, |_, v| {
            if window.len() == keep {
                window.pop_front();
            }
            window.push_back(v.clone());
        })?;
        Ok((total as usize, window))
    })
    .await;
    let mut out = String::new();
    out.push_str("<form method=\"get\" action=\"/console/audit\" class=\"filters\">");
    for (key, label, hint) in [
        ("user", "User", "alice"),
        ("target", "Target", "orders"),
        ("kind", "Kind", "delete"),
        ("decision", "Decision", "allow, deny, approve"),
        ("type", "Record type", "command, approval, session"),
        ("since", "Since", "1h or 2026-12-01T00:00:00Z"),
        ("until", "Until", ""),
        ("text", "Text", "DELETE FROM"),
    ] {
        let value = given
            .iter()
            .find(|(g, _)| *g == key)
            .map(|(_, v)| esc(v))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<label>{label}<input type=\"text\" name=\"{key}\" value=\"{value}\" placeholder=\"{hint}\"></label>"
        );
    }
    out.push_str("<button type=\"submit\">Search</button></form>");
    let qs: String = given
        .iter()
        .map(|(k, v)| format!("&{k}={}", url_encode(v)))
        .collect();
    let _ = write!(
        out,
        "<p class=\"actions\"><a href=\"/console/audit/export?format=csv{qs}\" download>Export CSV</a> · <a href=\"/console/audit/export?format=jsonl{qs}\" download>Export JSONL</a></p>\
         <form method=\"post\" action=\"/console/audit/verify\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\">Verify the chain</button></form>"
    );
    let (total, found) = match searched {
        Ok(found) => found,
        Err(e) => {
            let _ = write!(out, "<p class=\"error\">{}</p>", esc(&e));
            (0, Default::default())
        }
    };
    let pages = total.div_ceil(PAGE).max(1);
    let page_no = page_no.min(pages - 1);
    let _ = write!(
        out,
        "<p class=\"count\">{total} records, newest first · page {} of {pages}</p>",
        page_no + 1
    );
    out.push_str("<ol class=\"records\">");
    for v in found.iter().rev().skip(page_no * PAGE).take(PAGE) {
        let ts = v.get("ts").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let kind = match (
            v.get("type").and_then(|t| t.as_str()),
            v.get("action").and_then(|t| t.as_str()),
        ) {
            (Some(t), Some(a)) => format!("{t} {a}"),
            (Some(t), None) => t.to_owned(),
            (None, _) => "?".to_owned(),
        };
        let who = v.get("subject").and_then(|t| t.as_str()).unwrap_or("");
        let target = v.get("target").and_then(|t| t.as_str()).unwrap_or("");
        let decision = v.get("decision").and_then(|t| t.as_str()).unwrap_or("");
        let text = v.get("text").and_then(|t| t.as_str()).unwrap_or("");
        let _ = write!(
            out,
            "<li><details><summary>{} <span class=\"type\">{}</span> {} {} <span class=\"decision {}\">{}</span> <code>{}</code></summary><pre>{}</pre></details></li>",
            time(ts),
            esc(&kind),
            esc(who),
            esc(target),
            esc(decision),
            esc(decision),
            esc(&short(text, 160)),
            esc(&serde_json::to_string_pretty(v).unwrap_or_default()),
        );
    }
    out.push_str("</ol><nav class=\"pages\">");
    if page_no > 0 {
        let _ = write!(
            out,
            "<a href=\"/console/audit?page={}{qs}\" rel=\"prev\">Newer</a> ",
            page_no - 1
        );
    }
    if page_no + 1 < pages {
        let _ = write!(
            out,
            "<a href=\"/console/audit?page={}{qs}\" rel=\"next\">Older</a>",
            page_no + 1
        );
    }
    out.push_str("</nav>");
    page(200, "Audit", Some((identity, csrf)), &out)
}

async fn audit_export(shard: &Shard, req: &http::Request<'_, '_>, identity: &Identity) -> Vec<u8> {
    if !super::is_admin(shard, identity) {
        return super::json(
            403,
            "Forbidden",
            r#"{"error":"the audit log is for the admin groups"}"#,
        );
    }
    let Some(dir) = audit_dir(shard) else {
        return super::json(
            404,
            "Not Found",
            r#"{"error":"no audit log is configured"}"#,
        );
    };
    let filter = match filters(req) {
        Ok((f, _)) => f,
        Err(e) => {
            return super::json(
                400,
                "Bad Request",
                &serde_json::json!({ "error": e }).to_string(),
            )
        }
    };
    let csv = query_param(req.query(), "format").as_deref() == Some("csv");
    let exported = blocking(move || {
        let mut body = Vec::new();
        if csv {
            body.extend_from_slice(crate::audit::verify::CSV_COLUMNS.join(",").as_bytes());
            body.push(b'\n');
        }
        crate::audit::verify::search(&dir, &filter, |line, v| {
            if body.len() > MAX_EXPORT {
                return; // (refused below; the rest of the log is only read)
            }
            if csv {
                let _ = crate::audit::verify::csv_row(v, &mut body);
            } else {
                body.extend_from_slice(line);
                body.push(b'\n');
            }
        })?;
        Ok((body.len() <= MAX_EXPORT).then_some(body))
    })
    .await;
    let body = match exported {
        Ok(Some(body)) => body,
        Ok(None) => {
            return super::json(
                413,
                "Payload Too Large",
                &serde_json::json!({ "error": format!(
                    "the export is larger than {} MiB: narrow the search (or use `sluice audit export` on the host)",
                    MAX_EXPORT >> 20
                ) })
                .to_string(),
            )
        }
        Err(e) => {
            return super::json(
                500,
                "Internal Server Error",
                &serde_json::json!({ "error": e }).to_string(),
            )
        }
    };
    let (ctype, name) = if csv {
        ("text/csv", "sluice-audit.csv")
    } else {
        ("application/x-ndjson", "sluice-audit.jsonl")
    };
    let disposition = format!("content-disposition: attachment; filename=\"{name}\"\r\n");
    respond(200, ctype, &disposition, &body)
}

async fn audit_verify(shard: &Shard, identity: &Identity, csrf: &str) -> Vec<u8> {
    let dir = match audit_access(shard, identity, csrf, "Verify") {
        Ok(d) => d,
        Err(reply) => return reply,
    };
    // A running gateway's log ends after its last checkpoint: an open tail.
    let result = blocking(move || {
        crate::audit::verify::load_pubkey(&dir, None)
            .and_then(|(key, _)| crate::audit::verify::verify(&dir, &key, true, None))
    })
    .await;
    let body = match result {
        Ok(r) => {
            format!(
                "<p class=\"ok\" id=\"verify-result\">ok: {}{}</p>",
                r.summary(),
                if r.crashes.is_empty() {
                    String::new()
                } else {
                    format!("; the gateway stopped without closing the log {} time(s), sealed on restart", r.crashes.len())
                },
            )
        }
        Err(e) => format!(
            "<p class=\"error\" id=\"verify-result\">FAILED: {}</p>",
            esc(&e)
        ),
    };
    page(
        200,
        "Verify",
        Some((identity, csrf)),
        &format!("{body}<p class=\"note\">Checked with the public key kept beside the signing key. For a check that does not trust this host, run <code>sluice audit verify --dir DIR --pubkey FILE --anchor CONNINFO</code> elsewhere.</p><p><a href=\"/console/audit\">Back to the audit log</a></p>"),
    )
}

/// A recording's id as the list shows it: its file name without `.cast`,
/// nothing that could name another path.
fn recording_id(id: &str) -> Option<&str> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then_some(id)
}

async fn sessions_page(shard: &Shard, identity: &Identity, csrf: &str) -> Vec<u8> {
    let dir = match audit_access(shard, identity, csrf, "Sessions") {
        Ok(d) => d.join("sessions"),
        Err(reply) => return reply,
    };
    let listed = blocking(move || Ok(list_recordings(&dir))).await;
    let mut files = listed.unwrap_or_default();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut out = String::new();
    if files.is_empty() {
        out.push_str(
            "<p class=\"empty\">No recorded sessions yet (SSH sessions are recorded).</p>",
        );
    }
    out.push_str("<ol class=\"records\">");
    for (ts, id, size, title) in files.iter().take(500) {
        let _ = write!(
            out,
            "<li><a href=\"/console/sessions/{id}\">{}</a> {} <span class=\"note\">{size} bytes</span></li>",
            esc(if title.is_empty() { id } else { title }),
            time(ts * 1000),
            id = esc(id),
        );
    }
    out.push_str("</ol>");
    page(200, "Sessions", Some((identity, csrf)), &out)
}

/// The recordings in `dir`: (start, id, size, title).
fn list_recordings(dir: &std::path::Path) -> Vec<(u64, String, u64, String)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let id = path
                .file_name()?
                .to_str()?
                .strip_suffix(".cast")?
                .to_owned();
            let size = e.metadata().ok()?.len();
            let file = std::fs::File::open(&path).ok()?;
            let first = std::io::BufRead::lines(std::io::BufReader::new(file))
                .next()?
                .ok()?;
            let header: serde_json::Value = serde_json::from_str(&first).ok()?;
            Some((
                header["timestamp"].as_u64().unwrap_or(0),
                id,
                size,
                header["title"].as_str().unwrap_or("").to_owned(),
            ))
        })
        .collect()
}

async fn session_page(shard: &Shard, rest: String, identity: &Identity, csrf: &str) -> Vec<u8> {
    let dir = match audit_access(shard, identity, csrf, "Sessions") {
        Ok(d) => d.join("sessions"),
        Err(reply) => return reply,
    };
    let (raw, id) = match rest.strip_suffix(".cast") {
        Some(id) => (true, id),
        None => (false, rest.as_str()),
    };
    let Some(id) = recording_id(id) else {
        return page(
            404,
            "Sessions",
            Some((identity, csrf)),
            "<p>No such recording.</p>",
        );
    };
    let path = dir.join(format!("{id}.cast"));
    // The page draws up to MAX_RECORDING; the download serves up to 16 times that.
    let limit = if raw {
        MAX_RECORDING * 16
    } else {
        MAX_RECORDING
    };
    let read = blocking(move || {
        let size = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
        if size > limit {
            return Ok(Err(size));
        }
        std::fs::read_to_string(&path)
            .map(Ok)
            .map_err(|e| e.to_string())
    })
    .await;
    if let Ok(Err(size)) = read {
        return page(
            413,
            "Sessions",
            Some((identity, csrf)),
            &format!("<p class=\"error\">This recording is {size} bytes, more than the console shows; replay it with <code>sluice sessions play</code> on the host.</p>"),
        );
    }
    let Ok(Ok(text)) = read else {
        return page(
            404,
            "Sessions",
            Some((identity, csrf)),
            "<p>No such recording.</p>",
        );
    };
    if raw {
        return respond(200, "application/x-asciicast", "", text.as_bytes());
    }
    let mut lines = text.lines();
    let header: serde_json::Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    // The whole session as text, for reading without the player.
    let mut output = String::new();
    for line in lines {
        if let Ok(serde_json::Value::Array(e)) = serde_json::from_str::<serde_json::Value>(line) {
            match (
                e.get(1).and_then(|k| k.as_str()),
                e.get(2).and_then(|d| d.as_str()),
            ) {
                (Some("o"), Some(d)) => output.push_str(d),
                (Some("m"), Some(d)) => {
                    let _ = write!(output, "\n[sluice: {d}]\n");
                }
                _ => {}
            }
        }
    }
    let body = format!(
        "<p class=\"meta\">{} · {} · {}×{}</p>\
         <div class=\"player\" data-cast=\"/console/sessions/{id}.cast\">\
         <p class=\"controls\"><button type=\"button\" class=\"play\" hidden>Play</button> \
         <label>Speed <select class=\"speed\" hidden><option value=\"1\">1×</option><option value=\"4\" selected>4×</option><option value=\"16\">16×</option></select></label> \
         <progress class=\"progress\" max=\"1\" value=\"0\" hidden></progress></p>\
         <pre class=\"screen\">{}</pre></div>\
         <p><a href=\"/console/sessions/{id}.cast\" download>Download the recording</a> (asciicast v2; <code>sluice sessions play</code> replays it in a terminal)</p>",
        esc(header["title"].as_str().unwrap_or(id)),
        time(header["timestamp"].as_u64().unwrap_or(0) * 1000),
        header["width"].as_u64().unwrap_or(80),
        header["height"].as_u64().unwrap_or(24),
        esc(&plain(&output)),
        id = esc(id),
    );
    page(200, "Session replay", Some((identity, csrf)), &body)
}

/// Terminal output as plain text: escape sequences dropped, carriage
/// returns folded (what a reader without the player sees).
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(d) = chars.next() {
                        if d == '\u{7}' {
                            break;
                        }
                        if d == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            '\u{8}' => {
                out.pop();
            }
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// `GET /console/events`: server-sent events, `approvals` whenever what the
/// caller may see changes (checked each second), for up to five minutes.
pub async fn events<S: monoio::io::AsyncWriteRent>(
    shard: Rc<Shard>,
    session: Option<String>,
    mut stream: S,
) {
    let signed_in = || {
        session
            .as_deref()
            .and_then(|id| shard.shared.console.get(id))
            .map(|(i, _)| i)
    };
    if signed_in().is_none() {
        let _ = stream
            .write_all(page(401, "Signed out", None, "<p>Sign in again.</p>"))
            .await;
        return;
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n{SECURITY_HEADERS}connection: close\r\n\r\nretry: 2000\n\n"
    );
    if stream.write_all(head.into_bytes()).await.0.is_err() {
        return;
    }
    let started = std::time::Instant::now();
    let mut last = String::new();
    while started.elapsed() < STREAM_FOR && !shard.stopping.is_set() {
        // Signed out (or expired): the stream ends.
        let Some(identity) = signed_in() else {
            return;
        };
        let listed =
            super::approvals::answer(shard.shared.approvals.list(Some(State::Pending))).await;
        let version = match listed {
            Ok(all) => {
                let admin = super::is_admin(&shard, &identity);
                all.iter()
                    .filter(|r| admin || may_see(&identity, r))
                    .take(60)
                    .map(|r| format!("{}:{}:{};", r.id, r.state.as_str(), r.approvals.len()))
                    .collect::<String>()
            }
            _ => "unavailable".into(),
        };
        let msg = if version != last {
            last = version;
            "event: approvals\ndata: changed\n\n".to_owned()
        } else {
            ": keep-alive\n\n".to_owned()
        };
        if stream.write_all(msg.into_bytes()).await.0.is_err() {
            return;
        }
        monoio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The session a request's cookie names (for [`events`], which checks it
/// each time it looks).
pub fn event_session(req: &http::Request<'_, '_>) -> Option<String> {
    cookie(req)
}

const SECURITY_HEADERS: &str = "content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'\r\nx-content-type-options: nosniff\r\nreferrer-policy: same-origin\r\nx-frame-options: DENY\r\n";

fn page(status: u16, title: &str, who: Option<(&Identity, &str)>, body: &str) -> Vec<u8> {
    let nav = match who {
        Some((identity, csrf)) => format!(
            "<nav><a href=\"/console/approvals\">Approvals</a><a href=\"/console/audit\">Audit</a><a href=\"/console/sessions\">Sessions</a>\
             <span class=\"who\">{}</span>\
             <form method=\"post\" action=\"/console/signout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\" class=\"link\">Sign out</button></form></nav>",
            esc(&identity.subject)
        ),
        None => String::new(),
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Sluice</title><link rel=\"stylesheet\" href=\"/console/console.css\"><script src=\"/console/console.js\" defer></script></head>\
         <body><header class=\"top\"><a class=\"brand\" href=\"/console/approvals\">Sluice</a>{nav}</header><main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title),
    );
    respond(status, HTML, "", html.as_bytes())
}

const HTML: &str = "text/html";

/// One whole answer: the status, the body's type (UTF-8), any extra header
/// lines, and the console's security headers; never cached, connection closed.
fn respond(status: u16, ctype: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        502 => "Bad Gateway",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}; charset=utf-8\r\n{extra}cache-control: no-store\r\n{SECURITY_HEADERS}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A page that only says what went wrong (signed out).
pub(super) fn error_page(status: u16, title: &str, message: &str) -> Vec<u8> {
    page(
        status,
        title,
        None,
        &format!("<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/console/signin\">Sign in</a></p>", esc(message)),
    )
}

/// A piece of a page for the live list, with its status (401: signed out).
fn fragment_status(status: u16, html: &str) -> Vec<u8> {
    respond(status, HTML, "", html.as_bytes())
}

fn fragment(html: &str) -> Vec<u8> {
    respond(200, HTML, "", html.as_bytes())
}

fn asset(ctype: &str, body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {ctype}; charset=utf-8\r\ncache-control: max-age=300\r\nx-content-type-options: nosniff\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

pub(super) fn redirect(to: &str, cookie: Option<&str>) -> Vec<u8> {
    let cookie = cookie
        .map(|c| format!("set-cookie: {c}\r\n"))
        .unwrap_or_default();
    respond(303, HTML, &format!("location: {to}\r\n{cookie}"), b"")
}

fn signin_form(shard: &Shard, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let config = shard.generation().config.clone();
    let provider = match (&config.console, &config.identity) {
        (Some(_), Some(identity)) => format!(
            "<p><a class=\"button\" id=\"oidc\" href=\"/console/oidc/start\">Sign in with {}</a></p><p class=\"note\">or with an access token:</p>",
            esc(&identity.issuer)
        ),
        _ => String::new(),
    };
    format!(
        "{error}{provider}<form method=\"post\" action=\"/console/signin\" class=\"signin\">\
         <label for=\"token\">Access token</label>\
         <textarea id=\"token\" name=\"token\" rows=\"5\" required autocomplete=\"off\" spellcheck=\"false\"></textarea>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"note\">Or open a one-time link: <code>sluice console link --admin URL --token TOKEN</code>.</p>"
    )
}

/// A time for people: UTC in the page (and on hover); the script shows it in
/// the viewer's zone.
fn time(ms: u64) -> String {
    let iso = crate::log::rfc3339_ms(ms);
    format!("<time datetime=\"{iso}\" title=\"{iso}\">{iso}</time>")
}

fn short(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// HTML-escapes text (element content and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| url_decode(k) == name)
        .map(|(_, v)| url_decode(v))
}

pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| url_decode(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_html_escapes() {
        assert_eq!(
            form_field(b"a=1&comment=looks+good%21&csrf=ab", "comment").as_deref(),
            Some("looks good!")
        );
        assert_eq!(form_field(b"comment=%", "comment").as_deref(), Some("%"));
        assert_eq!(form_field(b"comment=%4", "comment").as_deref(), Some("%4"));
        assert_eq!(
            esc("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
        assert_eq!(
            url_decode(&url_encode("Request 7 approved. <ok>")),
            "Request 7 approved. <ok>"
        );
        assert!(
            constant_eq(b"abc", b"abc")
                && !constant_eq(b"abc", b"abd")
                && !constant_eq(b"ab", b"abc")
        );
        assert_eq!(
            plain("\u{1b}[1;32muser@host\u{1b}[0m:~$ ls\r\nab\u{8}c\u{1b}]0;title\u{7}\n"),
            "user@host:~$ ls\nac\n"
        );
        for bad in ["", "../x", "..", ".hidden", "a/b", "a%2fb", "a b"] {
            assert_eq!(recording_id(bad), None, "{bad}");
        }
        assert_eq!(recording_id("web1-4ce8a609-1"), Some("web1-4ce8a609-1"));
    }
}
