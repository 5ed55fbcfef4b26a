//! What PostgreSQL logins learn from a database's catalog for the target's
//! rules, cached per shard: the catalog query scans `pg_attribute`, too slow
//! on a large schema to repeat at every login.

use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_masking::Style;
use sluice_protocols::sql::columns::Protected;

/// What the target's rules need to know of one upstream's catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The columns `table.column` rules name (and every column of a view
    /// built on a protected column): (table OID, column number, style).
    pub columns: Vec<(u32, i16, Style)>,
    /// What strict column rules protect here; `None`: they are off.
    pub protected: Option<Rc<Protected>>,
    /// Functions defined in the database (not built in, not from an
    /// extension) and not allowed by the guardrails: (schema, name),
    /// lower-cased. A call of one is opaque code.
    pub user_functions: Vec<(String, String)>,
}

/// How long resolved table rules are reused: the catalog query scans
/// `pg_attribute`, too slow on a large schema to repeat at every login. Within
/// it, a table created after the lookup is unknown to it and so keeps its table
/// rules by name (fail safe), as within one session.
const RESOLVED_TTL: Duration = Duration::from_secs(30);

/// Resolved catalogs by (target, database, rules), one list per shard.
#[derive(Default)]
pub struct Catalogs(Vec<(String, Instant, Rc<Catalog>)>);

impl Catalogs {
    /// Few targets and databases per gateway: a short list, oldest evicted.
    const MAX: usize = 64;

    pub fn get(&self, key: &str) -> Option<Rc<Catalog>> {
        self.0
            .iter()
            .find(|(k, at, _)| k == key && at.elapsed() < RESOLVED_TTL)
            .map(|(_, _, t)| t.clone())
    }

    pub fn put(&mut self, key: String, tables: Rc<Catalog>) {
        self.0
            .retain(|(k, at, _)| *k != key && at.elapsed() < RESOLVED_TTL);
        if self.0.len() >= Self::MAX {
            self.0.remove(0);
        }
        self.0.push((key, Instant::now(), tables));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_rules_are_reused_per_key_and_bounded() {
        let mut r = Catalogs::default();
        assert!(r.get("a").is_none());
        let one = Rc::new(Catalog {
            columns: vec![(16384, 3, Style::Full)],
            ..Catalog::default()
        });
        r.put("a".into(), one.clone());
        assert!(Rc::ptr_eq(&r.get("a").unwrap(), &one));
        assert!(r.get("b").is_none());
        // A new lookup for the same key replaces the old one.
        r.put("a".into(), Rc::new(Catalog::default()));
        assert_eq!(r.0.len(), 1);
        assert!(r.get("a").unwrap().columns.is_empty());
        // The oldest entry goes first once the list is full.
        for i in 0..Catalogs::MAX {
            r.put(format!("k{i}"), Rc::new(Catalog::default()));
        }
        assert_eq!(r.0.len(), Catalogs::MAX);
        assert!(r.get("a").is_none() && r.get("k0").is_some());
    }
}
