//! Cancel keys. Clients get a `BackendKeyData` minted by the gateway, never the
//! upstream's: a `CancelRequest` (which may land on any shard, on a new connection)
//! is looked up here and forwarded to the right upstream backend. Touched once per
//! session start, end and cancel, never per message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
    next_pid: AtomicU32,
}

impl CancelRegistry {
    /// Registers an upstream backend; returns the client-facing `(pid, key)`.
    pub fn register(&self, target: CancelTarget) -> (u32, u32) {
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed) % 0x7fff_fff0 + 1;
        let mut key = [0u8; 4];
        // A predictable key would let any client cancel others' queries.
        getrandom::fill(&mut key).expect("the OS random source is available");
        let key = u32::from_ne_bytes(key);
        if let Ok(mut map) = self.map.lock() {
            map.insert((pid, key), target);
        }
        (pid, key)
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
