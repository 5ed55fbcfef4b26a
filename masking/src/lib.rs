//! Detectors and in-place masking of sensitive values for the Sluice gateway.
//!
//! [`detect`] finds values (emails, card numbers, SSNs, phone numbers, IBANs,
//! IP addresses, AWS keys, JWTs, PEM private keys, bearer and API tokens): one
//! SIMD pass ([`classify`]) finds the positions where a value can start, and
//! only there do the validators run (Luhn, IIN ranges, mod-97, impossible SSN
//! ranges). [`mask`] hides them in place, keeping the
//! value's length. [`Masker`] combines a profile's detectors and column rules.
//!
//! ```
//! use sluice_masking::{Masker, Profile};
//! let profile = Profile::new(&["email", "credit_card"], &[("ssn", "redact")]).unwrap();
//! let mut m = Masker::new(profile);
//! let mut v = b"mail jane@example.com, card 4111 1111 1111 1111".to_vec();
//! let n = m.mask_value(&mut v, None);
//! assert_eq!(n, 2);
//! assert_eq!(&v[..], &b"mail j***@*******.com, card **** **** **** 1111"[..]);
//! ```
//!
//! [`StreamMasker`] does the same for a stream that arrives in chunks: a value
//! split across chunks is found exactly as if it came whole.
//!
//! The prefilter's instruction set ([`Isa`]: portable, AVX2, AVX-512 BW or
//! AVX-512 VBMI) is detected once per process and held by each [`Masker`]
//! from its construction ([`Masker::with_isa`] forces one).
//!
//! Pure: no I/O, no clock. The gateway wires it into its drivers.

pub mod classify;
pub mod custom;
pub mod detect;
mod error;
pub mod events;
mod isa;
pub mod json;
pub mod mask;
pub mod stream;

pub use custom::Entity;
pub use detect::{Detector, Hit};
pub use error::Error;
pub use events::{EventMasker, Events};
pub use isa::Isa;
pub use mask::{HashKey, Style};
pub use stream::StreamMasker;

/// A masking profile: the detectors to run on every value, and column rules.
#[derive(Debug, Clone)]
pub struct Profile {
    pub(crate) detectors: Vec<Detector>,
    columns: Vec<(String, Style)>,
    /// Custom entities from configuration, run after the built-in detectors.
    /// Shared, not copied: compiled once when the configuration loads.
    pub(crate) entities: std::sync::Arc<[Entity]>,
}

impl Profile {
    /// From the `[masking.NAME]` settings; `Err` names an unknown detector or style.
    pub fn new(detectors: &[&str], columns: &[(&str, &str)]) -> Result<Profile, Error> {
        Profile::with_key(detectors, columns, None)
    }

    /// As [`Profile::new`], with the key of the `hash` style.
    pub fn with_key(
        detectors: &[&str],
        columns: &[(&str, &str)],
        hash_key: Option<HashKey>,
    ) -> Result<Profile, Error> {
        let detectors = detectors
            .iter()
            .map(|d| Detector::from_name(d).ok_or_else(|| Error::UnknownDetector(d.to_string())))
            .collect::<Result<_, _>>()?;
        let columns = columns
            .iter()
            .map(|(c, s)| Style::parse(s, hash_key).map(|st| (c.to_ascii_lowercase(), st)))
            .collect::<Result<_, _>>()?;
        Ok(Profile {
            detectors,
            columns,
            entities: std::sync::Arc::new([]),
        })
    }

    /// The custom entities (see [`custom`]).
    pub fn entities(&self) -> &[Entity] {
        &self.entities
    }

    /// Adds custom entities (see [`custom`]).
    pub fn with_entities(mut self, entities: impl Into<std::sync::Arc<[Entity]>>) -> Profile {
        self.entities = entities.into();
        self
    }

    /// Does the profile have `column` or `table.column` rules (which need
    /// every result attributed to its exact columns)?
    pub fn has_column_rules(&self) -> bool {
        !self.columns.is_empty()
    }

    /// The column rule for a result column by its name alone: `column` rules,
    /// and `table.column` rules too (used when the column's table is unknown).
    pub fn column_style(&self, column: &str) -> Option<Style> {
        self.column_style_named(column, true)
    }

    /// The column rule for a result column by its name: `column` rules, and
    /// `table.column` (or `schema.table.column`) rules when `with_table_rules`,
    /// i.e. when the gateway cannot tell which table the column comes from.
    /// Names compare without regard to ASCII case.
    pub fn column_style_named(&self, column: &str, with_table_rules: bool) -> Option<Style> {
        let col = column.rsplit('.').next().unwrap_or(column);
        self.columns
            .iter()
            .find(|(c, _)| match c.rsplit_once('.') {
                None => c.eq_ignore_ascii_case(col),
                Some((_, rule_col)) => with_table_rules && rule_col.eq_ignore_ascii_case(col),
            })
            .map(|(_, s)| *s)
    }

    /// Every column name under a rule (the last part of `table.column`),
    /// lower-cased, each with its style.
    pub fn column_names(&self) -> impl Iterator<Item = (&str, Style)> {
        self.columns
            .iter()
            .map(|(c, s)| (c.rsplit('.').next().unwrap_or(c), *s))
    }

    /// The rules that name a table, as `(table, column, style)` with `table`
    /// either `table` or `schema.table` (lowercase): the gateway resolves them
    /// to the table's columns, so they follow a column under any alias and do
    /// not touch a same-named column of another table.
    pub fn table_rules(&self) -> impl Iterator<Item = (&str, &str, Style)> {
        self.columns
            .iter()
            .filter_map(|(c, s)| c.rsplit_once('.').map(|(t, col)| (t, col, *s)))
    }
}

/// Counts of masked values per detector (plus column rules under `None`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub by_detector: [u64; 12],
    pub by_column_rule: u64,
    /// Custom entities masked, by name.
    pub by_entity: Vec<(&'static str, u64)>,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.by_detector.iter().sum::<u64>()
            + self.by_column_rule
            + self.by_entity.iter().map(|(_, n)| n).sum::<u64>()
    }

    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        Detector::ALL
            .iter()
            .filter(|d| self.by_detector[**d as usize] > 0)
            .map(|d| (d.name(), self.by_detector[*d as usize]))
            .chain(self.by_entity.iter().copied())
            .collect()
    }

    pub(crate) fn entity(&mut self, name: &'static str) {
        match self.by_entity.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => self.by_entity.push((name, 1)),
        }
    }
}

/// Applies a profile to values; reuses its scratch space.
pub struct Masker {
    pub(crate) profile: Profile,
    /// The prefilter's instruction set, chosen when the masker is built.
    pub(crate) isa: Isa,
    /// Scratch, reused (also by [`StreamMasker`]).
    pub(crate) hits: Vec<Hit>,
    pub(crate) spans: Vec<std::ops::Range<usize>>,
    pub counts: Counts,
}

impl Masker {
    /// A masker on the best instruction set this CPU has ([`Isa::detect`]).
    pub fn new(profile: Profile) -> Masker {
        Masker::with_isa(profile, Isa::detect())
    }

    /// A masker whose prefilter runs on `isa` (tests and benchmarks force a
    /// path this way; every path masks alike).
    pub fn with_isa(profile: Profile, isa: Isa) -> Masker {
        Masker {
            profile,
            isa,
            hits: Vec::new(),
            spans: Vec::new(),
            counts: Counts::default(),
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The instruction set its prefilter runs on.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Masks one value in place: secrets the gateway holds first (hidden
    /// whole), then the column rule (if any), then content detection, which
    /// column rules add to and never replace. Returns the number of values
    /// masked.
    pub fn mask_value(&mut self, value: &mut [u8], column_rule: Option<Style>) -> u64 {
        let mut n = 0;
        // Secrets the gateway holds, hidden whole before anything else.
        for e in self.profile.entities.iter().filter(|e| e.secret) {
            self.spans.clear();
            e.find(value, &mut self.spans);
            for r in self.spans.drain(..) {
                mask::apply(value, r, None, Style::Full);
                self.counts.entity(e.name);
                n += 1;
            }
        }
        if let Some(style) = column_rule {
            let len = value.len();
            mask::apply(value, 0..len, None, style);
            self.counts.by_column_rule += 1;
            n += 1;
            if matches!(style, Style::Hash(_)) {
                // Nothing of the value is left to detect, and redacting the
                // pseudonym's shape would break the joins it exists for.
                return n;
            }
        }
        detect::scan_on(self.isa, value, &self.profile.detectors, &mut self.hits);
        for h in self.hits.drain(..) {
            mask::apply(value, h.range, Some(h.detector), Style::Redact);
            self.counts.by_detector[h.detector as usize] += 1;
            n += 1;
        }
        for e in self.profile.entities.iter().filter(|e| !e.secret) {
            self.spans.clear();
            e.find(value, &mut self.spans);
            for r in self.spans.drain(..) {
                mask::apply(value, r, None, Style::Redact);
                self.counts.entity(e.name);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests;
