//! Cancel keys. Clients get a `BackendKeyData` with the upstream backend's real
//! process id (so it agrees with `pg_backend_pid()`, notifications and
//! `pg_stat_activity`) and a secret key minted by the gateway, never the
//! upstream's: a `CancelRequest` (which may land on any shard, on a new
//! connection) is looked up here by both and forwarded to the right upstream
//! backend with its real key. Touched once per session start, end and cancel,
//! never per message.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// Where a client-facing cancel key leads.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub upstream: String,
    pub pid: u32,
    pub key: u32,
    /// Counts the client's cancel requests, so a session waiting inside the
    /// gateway (for an approval) stops waiting.
    pub cancels: Arc<AtomicU64>,
}

#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<(u32, u32), CancelTarget>>,
}

impl CancelRegistry {
    /// Registers an upstream backend; returns the client-facing `(pid, key)`:
    /// the backend's own process id and a fresh random key. Two upstream
    /// servers may use the same process id, so the key alone tells them apart.
    pub fn register(&self, target: CancelTarget) -> (u32, u32) {
        let pid = target.pid;
        let Ok(mut map) = self.map.lock() else {
            return (pid, random_key());
        };
        loop {
            // A predictable key would let any client cancel others' queries.
            let key = random_key();
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry((pid, key)) {
                e.insert(target);
                return (pid, key);
            }
        }
    }

    pub fn lookup(&self, pid: u32, key: u32) -> Option<CancelTarget> {
        self.map.lock().ok()?.get(&(pid, key)).cloned()
    }

    pub fn remove(&self, pid: u32, key: u32) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(&(pid, key));
        }
    }
}

fn random_key() -> u32 {
    let mut key = [0u8; 4];
    getrandom::fill(&mut key).expect("the OS random source is available");
    u32::from_ne_bytes(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pid: u32, key: u32) -> CancelTarget {
        CancelTarget {
            upstream: "127.0.0.1:5432".into(),
            pid,
            key,
            cancels: Arc::default(),
        }
    }

    #[test]
    fn clients_see_the_real_pid_and_a_key_of_the_gateways() {
        let r = CancelRegistry::default();
        let (pid, key) = r.register(target(4242, 7));
        assert_eq!(pid, 4242);
        let t = r.lookup(pid, key).expect("registered");
        assert_eq!((t.pid, t.key), (4242, 7), "forwarded with the real key");
        // The same pid on another server gets its own key.
        let (pid2, key2) = r.register(target(4242, 9));
        assert_eq!(pid2, 4242);
        assert_ne!(key, key2);
        assert_eq!(r.lookup(pid2, key2).unwrap().key, 9);
        // The upstream's own key is never accepted (unless drawn, 1 in 2^32).
        if key != 7 && key2 != 7 {
            assert!(r.lookup(4242, 7).is_none());
        }
        r.remove(pid, key);
        assert!(r.lookup(pid, key).is_none());
        assert!(r.lookup(pid2, key2).is_some());
    }
}
