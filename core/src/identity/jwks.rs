//! The pinned key set: loaded from a file, a URL or the issuer's OIDC discovery
//! document, kept in an `ArcSwap` every shard reads without locking, and refreshed
//! by one background thread (never on the data path): on its cache lifetime, and on
//! demand when a token names an unknown `kid` (rate-limited, so a flood of random
//! `kid`s costs the IdP at most one fetch per interval).

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::{info, warn};

/// Largest JWKS or discovery document accepted.
const MAX_DOCUMENT: u64 = 1 << 20;

pub struct KeyEntry {
    pub key: DecodingKey,
    /// The JWK's `alg`, when it pins one.
    pub alg: Option<Algorithm>,
}

/// One version of the key set.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, KeyEntry>,
    /// Bumped whenever the set changes, so caches of verified tokens can be dropped.
    pub generation: u64,
}

impl KeySet {
    pub fn get(&self, kid: &str) -> Option<&KeyEntry> {
        self.keys.get(kid)
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Parses a JWKS document; keys without `kid`, or not for signatures, are skipped.
    pub fn from_json(json: &[u8], generation: u64) -> Result<KeySet, String> {
        let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("invalid JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                warn!("jwks_key_skipped", kid = kid, reason = "unsupported key");
                continue;
            };
            let alg = jwk.common.key_algorithm.and_then(|a| {
                let name = serde_json::to_value(a).ok()?;
                Algorithm::from_str(name.as_str()?).ok()
            });
            keys.insert(kid, KeyEntry { key, alg });
        }
        Ok(KeySet { keys, generation })
    }
}

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    File(PathBuf),
    Url(String),
    /// `{issuer}/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery(String),
}

/// In the words of the config file: `file:PATH`, the URL, or the issuer's
/// discovery document.
impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "file:{}", p.display()),
            KeySource::Url(u) => f.write_str(u),
            KeySource::Discovery(issuer) => write!(f, "{issuer} (OIDC discovery)"),
        }
    }
}

impl KeySource {
    /// From the `jwks` setting (`file:PATH` or a URL), or discovery when unset.
    pub fn parse(jwks: Option<&str>, issuer: &str) -> KeySource {
        match jwks {
            Some(j) if j.starts_with("file:") => KeySource::File(PathBuf::from(&j[5..])),
            Some(url) => KeySource::Url(url.to_owned()),
            None => KeySource::Discovery(issuer.to_owned()),
        }
    }

    /// Fetches the JWKS; returns the document and how long it may be cached.
    fn fetch(&self) -> Result<(Vec<u8>, Option<Duration>), String> {
        match self {
            KeySource::File(p) => std::fs::read(p)
                .map(|d| (d, None))
                .map_err(|e| format!("{}: {e}", p.display())),
            KeySource::Url(u) => http_get(u),
            KeySource::Discovery(issuer) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let (doc, _) = http_get(&url)?;
                let doc: serde_json::Value = serde_json::from_slice(&doc)
                    .map_err(|e| format!("{url}: invalid JSON: {e}"))?;
                let jwks_uri = doc
                    .get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| format!("{url}: no jwks_uri"))?;
                http_get(jwks_uri)
            }
        }
    }
}

fn http_get(url: &str) -> Result<(Vec<u8>, Option<Duration>), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| format!("{url}: {e}"))?;
    let max_age = resp
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())
        })
        .map(Duration::from_secs);
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_DOCUMENT)
        .read_to_vec()
        .map_err(|e| format!("{url}: {e}"))?;
    Ok((body, max_age))
}

/// The shared, refreshed key set.
pub struct KeyStore {
    current: ArcSwap<KeySet>,
    refresh: Mutex<mpsc::Sender<()>>,
    /// Milliseconds since `started` of the last on-demand refresh request.
    last_demand: AtomicU64,
    started: Instant,
    min_interval: Duration,
}

impl KeyStore {
    /// Loads the keys once (an error here fails start-up) and starts the refresher.
    pub fn start(source: KeySource, interval: Duration) -> Result<Arc<KeyStore>, String> {
        let (doc, max_age) = source.fetch()?;
        let first = KeySet::from_json(&doc, 1)?;
        info!("jwks_loaded", source = source, keys = first.keys.len());
        let (tx, rx) = mpsc::channel();
        let store = Arc::new(KeyStore {
            current: ArcSwap::from_pointee(first),
            refresh: Mutex::new(tx),
            last_demand: AtomicU64::new(0),
            started: Instant::now(),
            min_interval: interval.min(Duration::from_secs(10)),
        });
        let weak = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("sluice-jwks".into())
            .spawn(move || {
                let mut wait = cache_lifetime(max_age, interval);
                let mut last_doc = doc;
                loop {
                    match rx.recv_timeout(wait) {
                        Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    let Some(store) = weak.upgrade() else { return };
                    match source.fetch() {
                        Ok((doc, max_age)) => {
                            wait = cache_lifetime(max_age, interval);
                            if doc == last_doc {
                                continue;
                            }
                            let generation = store.current.load().generation + 1;
                            match KeySet::from_json(&doc, generation) {
                                Ok(set) => {
                                    info!(
                                        "jwks_refreshed",
                                        keys = set.keys.len(),
                                        generation = generation
                                    );
                                    store.current.store(Arc::new(set));
                                    last_doc = doc;
                                }
                                Err(e) => warn!(
                                    "jwks_refresh_failed",
                                    error = e,
                                    keeping = "previous keys"
                                ),
                            }
                        }
                        Err(e) => {
                            wait = interval.min(Duration::from_secs(30));
                            warn!("jwks_refresh_failed", error = e, keeping = "previous keys");
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the JWKS refresher: {e}"))?;
        Ok(store)
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Asks for a refresh because a token named an unknown key. Returns `false`
    /// (and asks nothing) if one was asked for within the minimum interval.
    pub fn request_refresh(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_demand.load(Ordering::Relaxed);
        if last != 0 && now - last < self.min_interval.as_millis() as u64 {
            return false;
        }
        if self
            .last_demand
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.refresh
            .lock()
            .map(|tx| tx.send(()).is_ok())
            .unwrap_or(false)
    }
}

fn cache_lifetime(max_age: Option<Duration>, interval: Duration) -> Duration {
    max_age
        .map(|m| {
            m.clamp(Duration::from_secs(1), Duration::from_secs(86_400))
                .min(interval)
        })
        .unwrap_or(interval)
}
