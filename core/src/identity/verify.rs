//! Token validation: a pure function of the token, the key set and `now`.

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::jwks::KeySet;
use super::Identity;

/// Longest token accepted; anything longer is refused before parsing.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was refused. The message is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token presented")]
    Missing,
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("token header `{0}` is not accepted: keys come only from the configured JWKS")]
    EmbeddedKey(&'static str),
    #[error("token header `crit` names extensions Sluice does not implement: {0}")]
    Critical(String),
    #[error("token has no `kid`")]
    NoKid,
    #[error("token key `{0}` is not in the JWKS")]
    UnknownKid(String),
    #[error("token type `{0}` is not an access token")]
    Type(String),
    #[error("token signature is invalid")]
    Signature,
    #[error("token issuer is not accepted")]
    Issuer,
    #[error("token audience does not include `{0}`")]
    Audience(String),
    #[error("token `{0}` claim is missing or not a whole number of seconds in a sane range")]
    ClaimType(&'static str),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token is issued in the future")]
    IssuedInFuture,
    #[error("token has no `sub`")]
    NoSubject,
}

/// What the verifier checks, from `[identity]`.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    pub issuer: String,
    pub audience: String,
    pub groups_claim: String,
    pub leeway: Duration,
    pub algorithms: Vec<Algorithm>,
    /// Shared secret for HS256/384/512; HMAC is refused without one.
    pub hmac_secret: Option<Vec<u8>>,
    /// Required `typ` header (e.g. `at+jwt`), compared case-insensitively.
    pub require_typ: Option<String>,
}

impl VerifierConfig {
    /// The default allow-list: asymmetric algorithms only.
    pub fn default_algorithms() -> Vec<Algorithm> {
        use Algorithm::*;
        vec![
            RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
        ]
    }
}

pub struct Verifier {
    config: VerifierConfig,
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl Verifier {
    pub fn new(config: VerifierConfig) -> Self {
        Verifier { config }
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Verifies `token` against `keys` at time `now` (Unix seconds).
    pub fn verify(&self, token: &str, keys: &KeySet, now: u64) -> Result<Identity, AuthError> {
        let c = &self.config;
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
            return Err(AuthError::Malformed);
        }
        // RFC 7515 4.1.11: `crit` lists extensions the recipient must
        // understand to accept the token; Sluice implements none.
        if let Some(crit) = raw_header(token).and_then(|h| h.get("crit").cloned()) {
            let text: String = crit.to_string().chars().take(64).collect();
            return Err(AuthError::Critical(text));
        }
        // A header that does not decode names an algorithm jsonwebtoken does not
        // know (`none`, `None`, ...) or is not JSON at all.
        let header = jsonwebtoken::decode_header(token).map_err(|_| match raw_alg(token) {
            Some(alg) => AuthError::Algorithm(alg),
            None => AuthError::Malformed,
        })?;
        for (present, name) in [
            (header.jku.is_some(), "jku"),
            (header.x5u.is_some(), "x5u"),
            (header.x5c.is_some(), "x5c"),
            (header.jwk.is_some(), "jwk"),
        ] {
            if present {
                return Err(AuthError::EmbeddedKey(name));
            }
        }
        let alg = header.alg;
        let allowed = if is_hmac(alg) {
            c.hmac_secret.is_some() && c.algorithms.contains(&alg)
        } else {
            c.algorithms.contains(&alg)
        };
        if !allowed {
            return Err(AuthError::Algorithm(format!("{alg:?}")));
        }
        if let Some(want) = &c.require_typ {
            let typ = header.typ.clone().unwrap_or_default();
            let typ_norm = typ.to_ascii_lowercase();
            let want = want.to_ascii_lowercase();
            if typ_norm != want && typ_norm != format!("application/{want}") {
                return Err(AuthError::Type(typ));
            }
        }
        let hmac_key;
        let key: &DecodingKey = if is_hmac(alg) {
            hmac_key = DecodingKey::from_secret(c.hmac_secret.as_deref().unwrap_or_default());
            &hmac_key
        } else {
            let kid = header.kid.as_deref().ok_or(AuthError::NoKid)?;
            let entry = keys
                .get(kid)
                .ok_or_else(|| AuthError::UnknownKid(kid.to_owned()))?;
            if entry.alg.is_some_and(|a| a != alg) {
                return Err(AuthError::Algorithm(format!("{alg:?}")));
            }
            &entry.key
        };

        // Signature only: every claim is checked below, explicitly, against `now`.
        let mut validation = Validation::new(alg);
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature
                | K::InvalidEcdsaKey
                | K::InvalidRsaKey(_)
                | K::InvalidKeyFormat => AuthError::Signature,
                K::InvalidAlgorithm => AuthError::Algorithm(format!("{alg:?}")),
                _ => AuthError::Malformed,
            }
        })?;
        self.check_claims(&data.claims, now)
    }

    fn check_claims(&self, claims: &Value, now: u64) -> Result<Identity, AuthError> {
        let c = &self.config;
        if claims.get("iss").and_then(Value::as_str) != Some(c.issuer.as_str()) {
            return Err(AuthError::Issuer);
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == c.audience,
            Some(Value::Array(v)) => v.iter().any(|a| a.as_str() == Some(c.audience.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err(AuthError::Audience(c.audience.clone()));
        }
        let leeway = c.leeway.as_secs();
        let exp = numeric(claims, "exp")?.ok_or(AuthError::ClaimType("exp"))?;
        if exp.saturating_add(leeway) <= now {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = numeric(claims, "nbf")? {
            if nbf > now.saturating_add(leeway) {
                return Err(AuthError::NotYetValid);
            }
        }
        if let Some(iat) = numeric(claims, "iat")? {
            if iat > now.saturating_add(leeway) {
                return Err(AuthError::IssuedInFuture);
            }
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::NoSubject)?
            .to_owned();
        Ok(Identity {
            subject,
            groups: groups(claims, &c.groups_claim),
            expires_at: exp,
        })
    }
}

/// A NumericDate claim: absent is `None`; present but not a non-negative number
/// (e.g. the string `"9999999999"`) is an error.
/// Latest time a token may name: the end of year 9999 (RFC 3339's range). A
/// larger value (`1e300`) would otherwise saturate to "never expires".
const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// A NumericDate claim: whole seconds since the epoch, within a sane range.
fn numeric(claims: &Value, name: &'static str) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0)
                    .filter(|f| *f <= MAX_NUMERIC_DATE as f64)
                    .map(|f| f as u64)
            })
            .filter(|v| *v <= MAX_NUMERIC_DATE)
            .map(Some)
            .ok_or(AuthError::ClaimType(name)),
        Some(_) => Err(AuthError::ClaimType(name)),
    }
}

/// Groups from a dotted claim path (`realm_access.roles`); a string or an array of
/// strings. Anything else yields no groups.
fn groups(claims: &Value, path: &str) -> Vec<String> {
    let mut v = claims;
    for part in path.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return Vec::new(),
        }
    }
    match v {
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The raw `alg` of a token header, for error messages about unknown algorithms.
fn raw_alg(token: &str) -> Option<String> {
    let v = raw_header(token)?;
    let alg = v.get("alg")?.as_str()?;
    Some(alg.chars().take(32).collect())
}

/// The token's header as JSON, read without any checks.
fn raw_header(token: &str) -> Option<Value> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
