//! Per-shard cache of classified SQL: a fleet repeating the same statements pays
//! the classifier once per shard. Keyed by the exact bytes (hashed with a seeded
//! fast hasher; the full text is compared, so a crafted collision cannot borrow
//! another statement's verdict). Bounded by entry size and total bytes; when full
//! it starts over, which keeps it simple and cheap.

use std::collections::HashMap;
use std::rc::Rc;

use sluice_protocols::sql::{Classifier, Dialect, Statement};

/// Statements longer than this are classified every time.
const MAX_ENTRY: usize = 16 * 1024;
/// Total SQL bytes kept per shard.
const MAX_BYTES: usize = 4 << 20;

pub struct SqlCache {
    map: HashMap<Box<[u8]>, Rc<[Statement]>, foldhash::fast::RandomState>,
    bytes: usize,
    classifier: Classifier,
    scratch: Vec<Statement>,
}

impl Default for SqlCache {
    fn default() -> Self {
        SqlCache {
            map: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            bytes: 0,
            classifier: Classifier::new(),
            scratch: Vec::new(),
        }
    }
}

impl SqlCache {
    pub fn classify(&mut self, sql: &[u8], dialect: Dialect) -> Rc<[Statement]> {
        if let Some(hit) = self.map.get(sql) {
            return hit.clone();
        }
        self.classifier.classify(sql, dialect, &mut self.scratch);
        let result: Rc<[Statement]> = Rc::from(self.scratch.as_slice());
        if sql.len() <= MAX_ENTRY {
            if self.bytes + sql.len() > MAX_BYTES {
                self.map.clear();
                self.bytes = 0;
            }
            self.bytes += sql.len();
            self.map.insert(sql.into(), result.clone());
        }
        result
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
    use sluice_protocols::sql::Kind;

    #[test]
    fn hits_return_the_same_verdict_and_the_cache_stays_bounded() {
        let mut c = SqlCache::default();
        let a = c.classify(b"DELETE FROM t", Dialect::Postgres);
        let b = c.classify(b"DELETE FROM t", Dialect::Postgres);
        assert!(Rc::ptr_eq(&a, &b));
        assert_eq!(a[0].kind, Kind::Delete);
        assert_ne!(
            c.classify(b"DELETE FROM t ", Dialect::Postgres)[0].flags,
            Default::default()
        );
        let big = vec![b' '; MAX_ENTRY + 1];
        c.classify(&big, Dialect::Postgres);
        assert_eq!(c.len(), 2, "oversized text is not kept");
        for i in 0..2000 {
            let sql = format!("SELECT {i} /* {} */", "x".repeat(4000));
            c.classify(sql.as_bytes(), Dialect::Postgres);
        }
        assert!(c.bytes <= MAX_BYTES);
    }
}
