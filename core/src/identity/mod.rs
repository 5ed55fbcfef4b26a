//! Who is asking: access tokens (OIDC/JWT) validated strictly, groups read from a
//! configurable claim.
//!
//! Every connection presents a token (the Postgres password, the HTTP bearer).
//! [`Verifier`] checks it against the pinned key set ([`jwks::KeyStore`], refreshed
//! off the data path) and yields an [`Identity`]. Each shard keeps its own
//! [`cache::TokenCache`], so a storm of connections with one token costs one
//! signature check per shard.
//!
//! # What is refused
//! Only allow-listed algorithms (`none` and HMAC are refused unless a shared secret
//! is configured); keys come only from the pinned JWKS by `kid` (tokens carrying
//! `jku`, `x5u`, `x5c` or `jwk` headers are refused outright); `iss` must match
//! exactly; `aud` must contain the audience; `exp` is required and must be a
//! number, as must `nbf`/`iat` when present; an optional `typ` check keeps ID
//! tokens from being used as access tokens.

pub mod cache;
pub mod jwks;
pub mod sessions;
pub mod token;
mod verify;

pub use verify::{AuthError, Verifier, VerifierConfig};

/// A caller, as established by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub subject: String,
    /// Group names from the groups claim, as given.
    pub groups: Vec<String>,
    /// The token's `exp` (Unix seconds).
    pub expires_at: u64,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies `token` against the pinned key set; a token naming an unknown key
/// triggers one (rate-limited) JWKS refresh, waited for with the runtime's
/// `sleep` (without blocking it), and a second try.
pub async fn verify_fresh<S: std::future::Future<Output = ()>>(
    verifier: &Verifier,
    keys: &jwks::KeyStore,
    token: &str,
    now: u64,
    sleep: impl Fn(std::time::Duration) -> S,
) -> Result<Identity, AuthError> {
    let set = keys.keys();
    let result = verifier.verify(token, &set, now);
    if !(matches!(result, Err(AuthError::UnknownKid(_))) && keys.request_refresh()) {
        return result;
    }
    let before = set.generation;
    for _ in 0..100 {
        sleep(std::time::Duration::from_millis(20)).await;
        if keys.generation() != before {
            break;
        }
    }
    verifier.verify(token, &keys.keys(), now)
}
