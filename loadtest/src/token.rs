//! Mints access tokens from a dev key written by `sluice token keygen`, one per
//! simulated agent (EdDSA, same `kid` derivation as the gateway's dev keys).

use std::path::Path;

use anyhow::{Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

pub struct Minter {
    key: SigningKey,
    kid: String,
    iss: String,
    aud: String,
}

impl Minter {
    pub fn load(path: &Path, iss: &str, aud: &str) -> Result<Minter> {
        let pem =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let key = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let digest = Sha256::digest(key.verifying_key().as_bytes());
        let kid = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Minter {
            key,
            kid,
            iss: iss.to_owned(),
            aud: aud.to_owned(),
        })
    }

    /// A one-hour token for `sub` in `groups`.
    pub fn mint(&self, sub: &str, groups: &[&str]) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = serde_json::json!({"alg": "EdDSA", "kid": self.kid, "typ": "JWT"});
        let claims = serde_json::json!({
            "iss": self.iss, "aud": self.aud, "sub": sub, "groups": groups,
            "iat": now, "nbf": now, "exp": now + 3600,
        });
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let sig = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64URL.encode(sig.to_bytes()))
    }
}
