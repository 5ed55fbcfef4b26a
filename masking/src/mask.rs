//! Mask styles. `redact`, `last4` and `full` keep the value's length, so a value
//! is masked in place in the buffer it arrived in (no copy, no re-framing).

use std::ops::Range;

use crate::detect::Detector;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Same length, shape kept: `j***@*****.com`, `***-**-****`.
    Redact,
    /// Everything but the last four digits or characters: `****-****-****-1234`.
    Last4,
    /// Every byte becomes `*`.
    Full,
}

impl Style {
    pub fn from_name(name: &str) -> Option<Style> {
        Some(match name {
            "redact" => Style::Redact,
            "last4" => Style::Last4,
            "full" => Style::Full,
            _ => return None,
        })
    }
}

/// Masks `buf[range]` in place as a value found by `detector`.
pub fn apply(buf: &mut [u8], range: Range<usize>, detector: Option<Detector>, style: Style) {
    let v = &mut buf[range];
    match style {
        Style::Full => v.fill(b'*'),
        Style::Last4 => {
            // Keep the last four alphanumerics (and separators as they are).
            let mut keep = 4;
            for b in v.iter_mut().rev() {
                if b.is_ascii_alphanumeric() {
                    if keep > 0 {
                        keep -= 1;
                    } else {
                        *b = b'*';
                    }
                }
            }
        }
        Style::Redact => match detector {
            Some(Detector::Email) => {
                // First character of the local part and the TLD stay: j***@*****.com
                let at = v.iter().position(|&b| b == b'@').unwrap_or(v.len());
                let dot = v
                    .iter()
                    .rposition(|&b| b == b'.')
                    .filter(|&d| d > at)
                    .unwrap_or(v.len());
                for (i, b) in v.iter_mut().enumerate() {
                    if (i > 0 && i < at) || (i > at && i < dot) {
                        *b = b'*';
                    }
                }
            }
            Some(Detector::CreditCard) => apply(v, 0..v.len(), None, Style::Last4),
            _ => {
                // Keep separators and punctuation, hide letters and digits.
                for b in v.iter_mut() {
                    if b.is_ascii_alphanumeric() || *b >= 0x80 {
                        *b = b'*';
                    }
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(s: &str, d: Option<Detector>, style: Style) -> String {
        let mut b = s.as_bytes().to_vec();
        let n = b.len();
        apply(&mut b, 0..n, d, style);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn styles_keep_length_and_shape() {
        assert_eq!(
            masked("jane.doe@example.com", Some(Detector::Email), Style::Redact),
            "j*******@*******.com"
        );
        assert_eq!(
            masked(
                "4111-1111-1111-1234",
                Some(Detector::CreditCard),
                Style::Redact
            ),
            "****-****-****-1234"
        );
        assert_eq!(
            masked("078-05-1120", Some(Detector::Ssn), Style::Redact),
            "***-**-****"
        );
        assert_eq!(
            masked("078-05-1120", Some(Detector::Ssn), Style::Last4),
            "***-**-1120"
        );
        assert_eq!(masked("secret", None, Style::Full), "******");
    }
}
