//! Per-shard cache of verified tokens, keyed by the token itself (SipHash with a
//! per-process random key, so crafted tokens cannot collide buckets) and valid
//! until the token's `exp`. A change of the key set empties it, so a key removed
//! from the JWKS stops working for new connections at once.

use std::collections::HashMap;
use std::rc::Rc;

use super::Identity;

pub struct TokenCache {
    map: HashMap<Box<str>, Rc<Identity>>,
    generation: u64,
    capacity: usize,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            map: HashMap::new(),
            generation: 0,
            capacity,
        }
    }

    pub fn get(&mut self, token: &str, now: u64, generation: u64) -> Option<Rc<Identity>> {
        if generation != self.generation {
            self.map.clear();
            self.generation = generation;
            return None;
        }
        match self.map.get(token) {
            Some(id) if id.expires_at > now => Some(id.clone()),
            Some(_) => {
                self.map.remove(token);
                None
            }
            None => None,
        }
    }

    pub fn insert(&mut self, token: &str, identity: Rc<Identity>, now: u64) {
        if self.map.len() >= self.capacity {
            self.map.retain(|_, id| id.expires_at > now);
            if self.map.len() >= self.capacity {
                self.map.clear();
            }
        }
        self.map.insert(token.into(), identity);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(exp: u64) -> Rc<Identity> {
        Rc::new(Identity {
            subject: "a".into(),
            groups: vec![],
            expires_at: exp,
        })
    }

    #[test]
    fn expires_and_is_emptied_by_a_new_key_set() {
        let mut c = TokenCache::new(2);
        assert!(c.get("t", 100, 1).is_none());
        c.insert("t", id(200), 100);
        assert!(c.get("t", 150, 1).is_some());
        assert!(c.get("t", 200, 1).is_none(), "expired at exp");
        c.insert("t", id(300), 100);
        assert!(
            c.get("t", 150, 2).is_none(),
            "new generation empties the cache"
        );
        assert!(c.is_empty());
        c.insert("a", id(300), 100);
        c.insert("b", id(300), 100);
        c.insert("c", id(300), 100);
        assert!(c.len() <= 2, "bounded");
    }
}
