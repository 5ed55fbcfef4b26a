//! Sluice's own login to the upstream sshd: its host key must be the pinned
//! one (no trust on first use), and Sluice authenticates with the target's
//! key or password; the caller never sees either.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use sluice_config::Target;

/// The client side's handler: it only checks the host key.
pub(super) struct Pinned {
    /// The keys the upstream may present (pinned, or from known_hosts).
    keys: Vec<PublicKey>,
    /// What the upstream presented instead, for the log.
    pub(super) presented: Arc<std::sync::Mutex<Option<String>>>,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Key material only: `PublicKey`'s equality also compares comments.
        let ok = matches!(key, PublicKeyOrCertificate::PublicKey { key, .. }
            if self.keys.iter().any(|k| k.key_data() == key.key_data()));
        if !ok {
            let shown = key
                .public_key()
                .to_openssh()
                .unwrap_or_else(|_| "an unreadable key".into());
            if let Ok(mut p) = self.presented.lock() {
                *p = Some(shown);
            }
        }
        Ok(ok)
    }
}

pub(super) type Upstream = client::Handle<Pinned>;

/// Connects and logs in to the target's upstream within `timeout`.
pub(super) async fn connect(target: &Target, timeout: Duration) -> Result<Upstream, String> {
    let keys = crate::upstream::ssh_host_keys(target)?;
    let mut algorithms = Vec::with_capacity(keys.len());
    for key in &keys {
        let algorithm = match key.algorithm() {
            russh::keys::Algorithm::Rsa { .. } => russh::keys::Algorithm::Rsa {
                hash: Some(russh::keys::HashAlg::Sha512),
            },
            other => other,
        };
        if !algorithms.contains(&algorithm) {
            algorithms.push(algorithm);
        }
    }
    // Only the known keys' types are offered: the upstream cannot present a
    // different host key of another type instead.
    let config = Arc::new(client::Config {
        preferred: russh::Preferred {
            key: Cow::Owned(algorithms),
            ..Default::default()
        },
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        ..Default::default()
    });
    let presented = Arc::new(std::sync::Mutex::new(None));
    let handler = Pinned {
        keys,
        presented: presented.clone(),
    };
    let connecting = client::connect(config, target.upstream.as_str(), handler);
    let mut handle = match tokio::time::timeout(timeout, connecting).await {
        Err(_) => {
            return Err(format!(
                "no SSH handshake within {} ms",
                timeout.as_millis()
            ))
        }
        Ok(Err(e)) => {
            if let Some(shown) = presented.lock().ok().and_then(|p| p.clone()) {
                return Err(format!(
                    "the upstream's host key is not the pinned one (it presented {shown})"
                ));
            }
            return Err(format!("connect: {e}"));
        }
        Ok(Ok(h)) => h,
    };
    let credentials = target.credentials.as_ref().ok_or("no credentials")?;
    let user = credentials.user.clone().unwrap_or_default();
    let authenticated = if let Some(path) = &credentials.key_file {
        let key = russh::keys::load_secret_key(path, None)
            .map_err(|e| format!("credentials.key_file {path}: {e}"))?;
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| e.to_string())?
            .flatten();
        handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
    } else if let Some(password) = &credentials.password {
        handle.authenticate_password(user, password.expose()).await
    } else {
        return Err("no key_file or password to log in with".into());
    };
    match authenticated {
        Ok(r) if r.success() => Ok(handle),
        Ok(_) => Err("the upstream refused Sluice's login".into()),
        Err(e) => Err(format!("login: {e}")),
    }
}
