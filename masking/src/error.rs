//! The crate's error: what is wrong with a profile's detectors or styles, a
//! field rule, a custom entity or an instruction set's name. Each message is
//! the one configuration errors show.

/// An error of this crate; each variant carries the offending name or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A detector name that is not one of [`crate::Detector::ALL`].
    #[error("unknown detector `{0}`")]
    UnknownDetector(String),
    /// The `hash` style without a key to hash with.
    #[error("mask style `hash` needs a key (hash_key_env)")]
    HashWithoutKey,
    /// A style name that is not `redact`, `last4`, `full` or `hash`.
    #[error("mask style `{0}` is not available")]
    UnknownStyle(String),
    /// A `$`-rooted field path that does not parse.
    #[error("invalid field path `{0}`: expected e.g. $.users[*].ssn")]
    InvalidFieldPath(String),
    /// A custom entity's validator that is not `none`, `luhn` or `mod97`.
    #[error("unknown validator `{0}`: expected none, luhn or mod97")]
    UnknownValidator(String),
    /// A custom entity's pattern that does not compile; `reason` says why.
    #[error("invalid pattern: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    /// A custom entity's pattern whose matches are not bounded by `max` bytes
    /// (the streaming window).
    #[error(
        "pattern can match more than {max} bytes: bound its repetitions (e.g. `{{1,64}}` instead of `+`)"
    )]
    UnboundedPattern { pattern: String, max: usize },
    /// A custom entity's pattern that can match the empty string.
    #[error("pattern can match the empty string")]
    EmptyMatch { pattern: String },
    /// An instruction set name that is not one of [`crate::Isa::name`]'s.
    #[error("unknown instruction set `{0}`: expected portable, avx2, avx512bw or avx512vbmi")]
    UnknownIsa(String),
    /// An instruction set this CPU does not have.
    #[error("instruction set `{0}` is not available on this CPU")]
    UnsupportedIsa(&'static str),
}

/// Its message: for callers whose errors are strings (configuration).
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}
