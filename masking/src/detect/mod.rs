//! Content detectors. One pass classifies the bytes 64 at a time with SIMD
//! ([`crate::classify`]) into the few positions where a value can start: an
//! `@`, a `+`, a `:`, a run of digits joined by single separators that is long
//! enough for a card, SSN, phone or IPv4 address, two capitals (IBAN, AWS key
//! id, `AIza`, `BEGIN`), a `J` after `ey`, an `e` two bytes before `re` (`eare`
//! of `Bearer`), an `_` or `-` after a lowercase letter (inside a token
//! prefix). Only there do the validators run (Luhn, IIN ranges, mod-97,
//! impossible SSN ranges), so text without candidates costs the classification
//! pass and nothing more.
//!
//! Each validator is anchored at the position a value starts (or, for emails
//! and IPv6, at the `@` or `:` inside it) and checks everything itself, so the
//! result equals trying every validator at every byte ([`scan_reference`], the
//! tests' ground truth); the prefilter only decides where to look.
//!
//! A detector reports byte ranges of sensitive values within one buffer; masking
//! them is [`crate::mask`]'s job.

mod email;
mod iban;
mod network;
mod numbers;
mod scan;
mod secrets;

use std::ops::Range;

#[cfg(test)]
pub(crate) use email::email_at;
pub use iban::iban_mod97;
pub use numbers::luhn;
pub use scan::{scan, scan_on, scan_reference};
pub(crate) use secrets::API_PREFIXES;

/// The built-in detectors (`[masking.NAME] detectors = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Detector {
    Email,
    CreditCard,
    Ssn,
    Phone,
    Iban,
    Ipv4,
    Ipv6,
    AwsKey,
    Jwt,
    PrivateKey,
    Bearer,
    ApiKey,
}

impl Detector {
    pub const ALL: [Detector; 12] = [
        Detector::Email,
        Detector::CreditCard,
        Detector::Ssn,
        Detector::Phone,
        Detector::Iban,
        Detector::Ipv4,
        Detector::Ipv6,
        Detector::AwsKey,
        Detector::Jwt,
        Detector::PrivateKey,
        Detector::Bearer,
        Detector::ApiKey,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::CreditCard => "credit_card",
            Detector::Ssn => "ssn",
            Detector::Phone => "phone",
            Detector::Iban => "iban",
            Detector::Ipv4 => "ipv4",
            Detector::Ipv6 => "ipv6",
            Detector::AwsKey => "aws_key",
            Detector::Jwt => "jwt",
            Detector::PrivateKey => "private_key",
            Detector::Bearer => "bearer",
            Detector::ApiKey => "api_key",
        }
    }

    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// One detected value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub detector: Detector,
    pub range: Range<usize>,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// True if `buf[i]` is absent or not a word byte (a match boundary).
fn boundary(buf: &[u8], i: Option<usize>) -> bool {
    i.and_then(|i| buf.get(i)).is_none_or(|&b| !is_word(b))
}

fn digit_at(buf: &[u8], i: usize) -> bool {
    buf.get(i).is_some_and(u8::is_ascii_digit)
}

/// The enabled detectors as a bit set.
#[derive(Clone, Copy)]
struct Enabled(u16);

impl Enabled {
    fn of(detectors: &[Detector]) -> Enabled {
        Enabled(detectors.iter().fold(0, |s, d| s | 1 << *d as u16))
    }
    fn has(self, d: Detector) -> bool {
        self.0 & (1 << d as u16) != 0
    }
}

/// Up to 20 ASCII digits collected from a run (no allocation).
struct Digits {
    buf: [u8; 20],
    len: usize,
}

impl Digits {
    fn new() -> Digits {
        Digits {
            buf: [0; 20],
            len: 0,
        }
    }
    fn push(&mut self, d: u8) {
        self.buf[self.len] = d;
        self.len += 1;
    }
    fn get(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}
