//! The gateway's one error type: what failed, whose fault it is (the client,
//! the upstream, or Sluice itself), whether trying again can help, and what the
//! client is told apart from what is logged. Each driver renders it in its own
//! protocol ([`Error::sqlstate`], [`Error::http_status`]); metrics count it by
//! kind and source ([`Error::metric`]).

use std::borrow::Cow;
use std::fmt;

use crate::metrics::ErrorKind;

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The caller sent something malformed, too large, or went away.
    Client,
    /// The target's server could not be reached, refused, or broke off.
    Upstream,
    /// Sluice itself cannot do what it must (record, mask, a bug).
    Internal,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Client => "client",
            Source::Upstream => "upstream",
            Source::Internal => "internal",
        }
    }
}

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The upstream could not be reached or its TLS handshake failed.
    Unreachable,
    /// The upstream refused Sluice's login or request.
    UpstreamRefused,
    /// An established upstream connection failed or broke the protocol.
    UpstreamBroken,
    /// The client sent a malformed request (it may send a better one).
    BadRequest,
    /// The client broke the protocol: the session cannot go on.
    ProtocolViolation,
    /// The client sent a message over a configured limit.
    TooLarge,
    /// The client asked for something Sluice does not do safely.
    Unsupported,
    /// The audit log cannot record commands: nothing runs.
    AuditUnavailable,
}

/// A failure on the data path.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: Kind,
    /// What the client is told.
    pub message: String,
    /// The cause, for the log only (never sent: it can name internal hosts).
    pub detail: String,
    /// A SQLSTATE to send instead of the kind's (the upstream's own code).
    pub code: Option<Cow<'static, str>>,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>, detail: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            detail: detail.into(),
            code: None,
        }
    }

    /// The upstream of target `name` cannot be reached (`detail`: why).
    pub fn unreachable(name: &str, detail: impl Into<String>) -> Error {
        Error::new(
            Kind::Unreachable,
            format!("target `{name}` is unavailable"),
            detail,
        )
    }

    /// The client broke the protocol; `message` says how.
    pub fn protocol_violation(message: impl Into<String>) -> Error {
        Error::new(Kind::ProtocolViolation, message, "")
    }

    /// With a SQLSTATE of its own (the upstream's).
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Error {
        self.code = Some(code.into());
        self
    }

    pub fn source(&self) -> Source {
        match self.kind {
            Kind::Unreachable | Kind::UpstreamRefused | Kind::UpstreamBroken => Source::Upstream,
            Kind::BadRequest | Kind::ProtocolViolation | Kind::TooLarge | Kind::Unsupported => {
                Source::Client
            }
            Kind::AuditUnavailable => Source::Internal,
        }
    }

    /// Whether the same request may succeed if tried again (on a new
    /// connection, or later): the upstream was unreachable or broke off.
    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            Kind::Unreachable | Kind::UpstreamBroken | Kind::AuditUnavailable
        )
    }

    /// The SQLSTATE a PostgreSQL client gets.
    pub fn sqlstate(&self) -> &str {
        if let Some(code) = &self.code {
            return code;
        }
        match self.kind {
            Kind::Unreachable | Kind::UpstreamRefused | Kind::UpstreamBroken => "08006",
            Kind::BadRequest | Kind::ProtocolViolation => "08P01",
            Kind::TooLarge => "54000",
            Kind::Unsupported => "0A000",
            Kind::AuditUnavailable => "53100",
        }
    }

    /// The HTTP status an HTTP client gets.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            Kind::Unreachable | Kind::UpstreamRefused | Kind::UpstreamBroken => 502,
            Kind::BadRequest | Kind::ProtocolViolation | Kind::Unsupported => 400,
            Kind::TooLarge => 413,
            Kind::AuditUnavailable => 503,
        }
    }

    /// The metric this failure counts under (`None`: not counted as an error,
    /// e.g. a refused request the client can fix).
    pub fn metric(&self) -> Option<ErrorKind> {
        match self.kind {
            Kind::Unreachable => Some(ErrorKind::UpstreamConnect),
            Kind::UpstreamRefused | Kind::UpstreamBroken => Some(ErrorKind::UpstreamIo),
            Kind::ProtocolViolation => Some(ErrorKind::ClientIo),
            Kind::AuditUnavailable => Some(ErrorKind::Audit),
            Kind::BadRequest | Kind::TooLarge | Kind::Unsupported => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.message, self.detail)
        }
    }
}

impl std::error::Error for Error {}

/// A PostgreSQL message the codec cannot read ends the session.
impl From<sluice_protocols::postgres::Error> for Error {
    fn from(e: sluice_protocols::postgres::Error) -> Error {
        Error::protocol_violation(format!("invalid message: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_renders_in_both_protocols_and_counts_by_source() {
        let e = Error::unreachable("orders", "connect: refused");
        assert_eq!(
            (e.sqlstate(), e.http_status(), e.source()),
            ("08006", 502, Source::Upstream)
        );
        assert!(e.retryable());
        assert_eq!(e.metric(), Some(ErrorKind::UpstreamConnect));
        assert_eq!(e.metric().unwrap().source_label(), e.source().label());
        // The client is told the target, never the cause.
        assert_eq!(e.message, "target `orders` is unavailable");
        assert_eq!(
            e.to_string(),
            "target `orders` is unavailable: connect: refused"
        );
        let e = Error::new(Kind::UpstreamRefused, "no", "").with_code("28P01");
        assert_eq!(e.sqlstate(), "28P01");
        let e = Error::new(Kind::TooLarge, "big", "");
        assert_eq!((e.sqlstate(), e.http_status()), ("54000", 413));
        assert!(!e.retryable() && e.source() == Source::Client);
    }
}
