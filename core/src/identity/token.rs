//! Development tokens: `sluice token keygen` and `sluice token mint`.
//!
//! An Ed25519 key pair is written as a PKCS#8 PEM private key and a matching JWKS
//! (`kid` = first 16 hex digits of the public key's SHA-256); tokens are minted
//! with `EdDSA`. The demo and the tests use these; nothing in production needs them.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub struct DevKey {
    signing: SigningKey,
    pub kid: String,
}

impl DevKey {
    pub fn generate() -> DevKey {
        let signing = SigningKey::generate(&mut rand_core::OsRng);
        DevKey::from_signing(signing)
    }

    fn from_signing(signing: SigningKey) -> DevKey {
        let digest = Sha256::digest(signing.verifying_key().as_bytes());
        let kid = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        DevKey { signing, kid }
    }

    pub fn load(path: &Path) -> Result<DevKey, String> {
        let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let signing = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| format!("{}: not an Ed25519 PKCS#8 PEM key: {e}", path.display()))?;
        Ok(DevKey::from_signing(signing))
    }

    /// The private key as PKCS#8 v1 PEM (no embedded public key), the form
    /// OpenSSL and Python's `cryptography` read, so other tools can mint tokens
    /// with it too.
    pub fn private_pem(&self) -> String {
        ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.signing.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .expect("an Ed25519 key always encodes")
        .to_string()
    }

    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": B64URL.encode(self.signing.verifying_key().as_bytes()),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk()] })
    }

    /// Signs `claims` as a JWT with this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let der = self
            .signing
            .to_pkcs8_der()
            .expect("an Ed25519 key always encodes");
        let key = EncodingKey::from_ed_der(der.as_bytes());
        jsonwebtoken::encode(&header, claims, &key).expect("Ed25519 signing cannot fail")
    }
}

/// Writes `dev.key.pem` (private, mode 0600) and `dev.jwks.json` into `dir`.
pub fn keygen(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let key = DevKey::generate();
    let key_path = dir.join("dev.key.pem");
    let jwks_path = dir.join("dev.jwks.json");
    write_private(&key_path, key.private_pem().as_bytes())?;
    let jwks = serde_json::to_string_pretty(&key.jwks()).expect("json");
    std::fs::write(&jwks_path, jwks + "\n").map_err(|e| format!("{}: {e}", jwks_path.display()))?;
    Ok((key_path, jwks_path))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The claims of a minted access token.
pub struct Claims<'a> {
    pub subject: &'a str,
    pub groups: &'a [String],
    pub audience: &'a str,
    pub issuer: &'a str,
    pub ttl_secs: u64,
    pub now: u64,
}

impl Claims<'_> {
    pub fn to_json(&self) -> Value {
        json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": self.subject,
            "groups": self.groups,
            "iat": self.now,
            "nbf": self.now,
            "exp": self.now + self.ttl_secs,
        })
    }
}
