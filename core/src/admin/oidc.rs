//! Console sign-in with the identity provider: the OpenID Connect
//! authorization code flow with PKCE (`[console]`).
//!
//! `GET /console/oidc/start` sends the browser to the provider's
//! authorization endpoint (from `identity.issuer`'s discovery document) with a
//! fresh `state` and an S256 code challenge; `GET /console/oidc/callback`
//! takes the code back (once, within ten minutes, for that `state`), trades it
//! with the verifier at the token endpoint, and signs in as the access token
//! says, verified like any token (issuer, audience, expiry, signature).
//! Network calls to the provider run on a thread of their own, never on a shard.

use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use sluice_protocols::http;

use super::console;
use crate::shard::Shard;

const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source is available");
    b64url(&b)
}

/// Runs a blocking call to the provider on a thread of its own.
async fn off_shard<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = flume::bounded(1);
    std::thread::Builder::new()
        .name("sluice-oidc".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| e.to_string())?;
    match monoio::time::timeout(PROVIDER_TIMEOUT * 2, rx.recv_async()).await {
        Ok(Ok(r)) => r,
        _ => Err("the identity provider did not answer in time".into()),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(PROVIDER_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into()
}

/// The provider's authorization and token endpoints, from its discovery document.
fn discover(issuer: &str) -> Result<(String, String), String> {
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
    Ok((field("authorization_endpoint")?, field("token_endpoint")?))
}

fn redirect_uri(cfg: &sluice_config::Console) -> String {
    format!("{}/console/oidc/callback", cfg.url)
}

/// `GET /console/oidc/start`.
pub async fn start(shard: &Shard) -> Vec<u8> {
    let config = shard.generation().config.clone();
    let (Some(cfg), Some(identity)) = (config.console.clone(), config.identity.clone()) else {
        return console::error_page(
            404,
            "Sign in",
            "Sign-in with the identity provider is not configured (`[console]`).",
        );
    };
    let endpoints = off_shard(move || discover(&identity.issuer)).await;
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
    let (state, verifier) = (random(32), random(48));
    let challenge = b64url(&Sha256::digest(verifier.as_bytes()));
    shard.shared.console.begin_flow(&state, &verifier);
    let sep = if authorize.contains('?') { '&' } else { '?' };
    let location = format!(
        "{authorize}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&code_challenge={challenge}&code_challenge_method=S256",
        console::url_encode(&cfg.client_id),
        console::url_encode(&redirect_uri(&cfg)),
        console::url_encode(&cfg.scopes),
    );
    console::redirect(&location, None)
}

/// `GET /console/oidc/callback?code=...&state=...`.
pub async fn callback(shard: &Shard, req: &http::Request<'_, '_>) -> Vec<u8> {
    let config = shard.generation().config.clone();
    let (Some(cfg), Some(identity)) = (config.console.clone(), config.identity.clone()) else {
        return console::error_page(
            404,
            "Sign in",
            "Sign-in with the identity provider is not configured (`[console]`).",
        );
    };
    let q = req.query();
    if let Some(e) = console::query_param(q, "error") {
        return console::error_page(
            401,
            "Sign in",
            &format!("The identity provider refused the sign-in: {e}"),
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
    // The state names this browser's flow, once: a replayed or forged
    // callback finds nothing.
    let Some(verifier) = shard.shared.console.finish_flow(&state) else {
        return console::error_page(
            400,
            "Sign in",
            "This sign-in was not started here, was used already, or took too long: start again.",
        );
    };
    let issuer = identity.issuer.clone();
    let exchanged = off_shard(move || {
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
        Ok(who) => {
            let (id, _) = shard.shared.console.open((*who).clone());
            crate::info!("console_signin", subject = who.subject, how = "oidc");
            console::redirect("/console/approvals", Some(&console::set_cookie(shard, &id)))
        }
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
