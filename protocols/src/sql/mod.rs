//! SQL guardrails' eyes: a zero-copy lexer and a statement classifier that cannot
//! be talked past with comments, quoting or case.
//!
//! ```
//! use sluice_protocols::sql::{classify, Dialect, Kind};
//! let s = classify(b"WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone", Dialect::Postgres);
//! assert_eq!(s[0].kind, Kind::Delete);
//! assert!(s[0].flags.unbounded && s[0].flags.writes);
//! let s = classify(b"SELECT ';DROP TABLE t' /* ; DROP */", Dialect::Postgres);
//! assert_eq!((s.len(), s[0].kind), (1, Kind::Select));
//! ```

pub mod classify;
pub mod columns;
pub mod lexer;

pub use classify::{
    calls, classify, setting, with_params, Classifier, Flags, Kind, Statement, Value,
};
pub use lexer::Dialect;

#[cfg(test)]
mod tests;
