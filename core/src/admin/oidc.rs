//! Console sign-in with the identity provider: the OpenID Connect
//! authorization code flow with PKCE (`[console]`).
//!
//! `GET /console/oidc/start` sends the browser to the provider's
//! authorization endpoint (from `identity.issuer`'s discovery document) with a
//! fresh `state` and an S256 code challenge, and marks the browser with a
//! random cookie of its own; `GET /console/oidc/callback` takes the code back
//! only from that browser, once, within ten minutes, trades it with the
//! verifier at the token endpoint, and signs in as the access token says,
//! verified like any token (issuer, audience, expiry, signature). Network calls
//! to the provider run off the shards; the discovery document is cached.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use sluice_protocols::http;

use super::console;
use crate::identity::sessions::FLOW_TTL;
use crate::shard::Shard;

const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the provider's endpoints are remembered.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);
/// The cookie tying a sign-in at the provider to the browser that began it.
const FLOW_COOKIE: &str = "sluice_oidc";

/// The provider's endpoints as last discovered, or why they could not be:
/// (issuer, when, authorize and token endpoints).
type Discovered = (String, Instant, Result<(String, String), String>);
static DISCOVERED: Mutex<Option<Discovered>> = Mutex::new(None);
/// How long a failed discovery is remembered (a provider that is down is not
/// asked again by every sign-in).
const FAILURE_TTL: Duration = Duration::from_secs(10);

/// The endpoints last discovered for `issuer`, while still fresh.
fn cached(issuer: &str) -> Option<Result<(String, String), String>> {
    let guard = DISCOVERED.lock().unwrap_or_else(|p| p.into_inner());
    let (i, at, r) = guard.as_ref()?;
    let ttl = if r.is_ok() {
        DISCOVERY_TTL
    } else {
        FAILURE_TTL
    };
    (i == issuer && at.elapsed() < ttl).then(|| r.clone())
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source is available");
    b64url(&b)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(PROVIDER_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// An endpoint the provider names: a plain URL (nothing that could end a
/// header line), https unless the issuer itself is plain http (a local
/// test provider).
fn endpoint(issuer: &str, url: &str, what: &str) -> Result<String, String> {
    let plain_ok = issuer.starts_with("http://");
    let scheme_ok = url.starts_with("https://") || (plain_ok && url.starts_with("http://"));
    if !scheme_ok || url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "the provider's {what} `{url}` is not an acceptable URL"
        ));
    }
    Ok(url.to_owned())
}

/// The provider's authorization and token endpoints, from its discovery
/// document (whose `issuer` must be the configured one).
fn discover(issuer: &str) -> Result<(String, String), String> {
    if let Some(r) = cached(issuer) {
        return r;
    }
    let found = fetch_discovery(issuer);
    *DISCOVERED.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((issuer.to_owned(), Instant::now(), found.clone()));
    found
}

fn fetch_discovery(issuer: &str) -> Result<(String, String), String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let mut r = agent()
        .get(&url)
        .call()
        .map_err(|e| format!("{url}: {e}"))?;
    if r.status() != 200 {
        return Err(format!("{url}: HTTP {}", r.status()));
    }
    let doc: serde_json::Value = serde_json::from_str(
        &r.body_mut()
            .with_config()
            .limit(256 * 1024)
            .read_to_string()
            .map_err(|e| format!("{url}: {e}"))?,
    )
    .map_err(|e| format!("{url}: invalid JSON: {e}"))?;
    let field = |k: &str| {
        doc.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("{url}: no {k}"))
    };
    if field("issuer")?.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(format!("{url}: names another issuer"));
    }
    let authorize = endpoint(
        issuer,
        &field("authorization_endpoint")?,
        "authorization endpoint",
    )?;
    let token = endpoint(issuer, &field("token_endpoint")?, "token endpoint")?;
    Ok((authorize, token))
}

fn redirect_uri(cfg: &sluice_config::Console) -> String {
    format!("{}/console/oidc/callback", cfg.url)
}

/// The flow cookie: `SameSite=Lax`, as the provider's redirect back is a
/// navigation from another site; only for the callback's path.
fn flow_cookie(shard: &Shard, value: &str) -> String {
    let secure = if shard.generation().config.gateway.admin_tls {
        "; Secure"
    } else {
        ""
    };
    format!("{FLOW_COOKIE}={value}; Path=/console/oidc; HttpOnly; SameSite=Lax; Max-Age={FLOW_TTL}{secure}")
}

pub(super) fn clear_flow_cookie() -> String {
    format!("{FLOW_COOKIE}=; Path=/console/oidc; HttpOnly; SameSite=Lax; Max-Age=0")
}

fn not_configured() -> Vec<u8> {
    console::error_page(
        404,
        "Sign in",
        "Sign-in with the identity provider is not configured (`[console]`).",
    )
}

/// `GET /console/oidc/start`.
pub async fn start(shard: &Shard) -> Vec<u8> {
    let config = shard.generation().config.clone();
    let (Some(cfg), Some(identity)) = (config.console.clone(), config.identity.clone()) else {
        return not_configured();
    };
    // Known endpoints need no thread; only a stale cache asks the provider.
    let endpoints = match cached(&identity.issuer) {
        Some(known) => known,
        None => console::blocking(move || discover(&identity.issuer)).await,
    };
    let (authorize, _) = match endpoints {
        Ok(e) => e,
        Err(e) => {
            crate::warn!("console_oidc_failed", step = "discovery", error = e);
            return console::error_page(
                502,
                "Sign in",
                "The identity provider could not be reached; try again, or sign in with a token.",
            );
        }
    };
    let (state, verifier, browser) = (random(32), random(48), random(32));
    shard.shared.console.begin_flow(&state, &verifier, &browser);
    let challenge = b64url(&Sha256::digest(verifier.as_bytes()));
    let sep = if authorize.contains('?') { '&' } else { '?' };
    let location = format!(
        "{authorize}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&code_challenge={challenge}&code_challenge_method=S256",
        console::url_encode(&cfg.client_id),
        console::url_encode(&redirect_uri(&cfg)),
        console::url_encode(&cfg.scopes),
    );
    console::redirect(&location, Some(&flow_cookie(shard, &browser)))
}

/// `GET /console/oidc/callback?code=...&state=...`.
pub async fn callback(shard: &Shard, req: &http::Request<'_, '_>) -> Vec<u8> {
    let config = shard.generation().config.clone();
    let (Some(cfg), Some(identity)) = (config.console.clone(), config.identity.clone()) else {
        return not_configured();
    };
    let q = req.query();
    if let Some(e) = console::query_param(q, "error") {
        // The provider's error code, when it is one; never text a link chose.
        let code = match e.len() <= 64 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            true => e,
            false => "an error".into(),
        };
        return console::error_page(
            401,
            "Sign in",
            &format!("The identity provider refused the sign-in ({code})."),
        );
    }
    let (Some(code), Some(state)) = (
        console::query_param(q, "code"),
        console::query_param(q, "state"),
    ) else {
        return console::error_page(
            400,
            "Sign in",
            "The identity provider's answer lacks a code or state.",
        );
    };
    // The flow this browser began, once: a callback replayed, forged, or
    // opened in another browser finds nothing.
    let browser = console::cookie_value(req, FLOW_COOKIE).unwrap_or_default();
    let Some(verifier) = shard.shared.console.finish_flow(&state, &browser) else {
        return console::error_page(
            400,
            "Sign in",
            "This sign-in was not started in this browser, was used already, or took too long: start again.",
        );
    };
    let issuer = identity.issuer.clone();
    let exchanged = console::blocking(move || {
        let (_, token_url) = discover(&issuer)?;
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("code", code),
            ("redirect_uri", redirect_uri(&cfg)),
            ("client_id", cfg.client_id.clone()),
            ("code_verifier", verifier),
        ];
        if let Some(secret) = &cfg.client_secret {
            form.push(("client_secret", secret.expose().to_owned()));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", console::url_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut r = agent()
            .post(&token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .send(body)
            .map_err(|e| format!("{token_url}: {e}"))?;
        let status = r.status().as_u16();
        let text = r
            .body_mut()
            .with_config()
            .limit(256 * 1024)
            .read_to_string()
            .map_err(|e| format!("{token_url}: {e}"))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| format!("{token_url}: HTTP {status}: not JSON"))?;
        if status != 200 {
            return Err(format!(
                "{token_url}: HTTP {status}: {}",
                v["error"].as_str().unwrap_or("refused")
            ));
        }
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{token_url}: no access_token"))
    })
    .await;
    let token = match exchanged {
        Ok(t) => t,
        Err(e) => {
            crate::warn!("console_oidc_failed", step = "token", error = e);
            return console::error_page(
                502,
                "Sign in",
                "The identity provider did not give a token for that code; start again.",
            );
        }
    };
    match shard.authenticate(&token).await {
        Ok(who) => console::sign_in_as(shard, (*who).clone(), "oidc", true),
        Err(e) => {
            crate::warn!("console_oidc_failed", step = "verify", error = e);
            console::error_page(
                401,
                "Sign in",
                &format!("The identity provider's token was refused: {e}"),
            )
        }
    }
}
