//! Structured logs: one line per event, `key=value` pairs, to standard error.
//!
//! The level comes from `SLUICE_LOG` (`error`, `warn`, `info` (default), `debug`).
//! Lines look like
//! `ts=2026-11-26T22:50:01.123Z level=info event=listening target=cache shard=0`;
//! values with spaces or quotes are quoted, so every line splits unambiguously.

use std::fmt::{Display, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static INIT: Once = Once::new();

/// Reads `SLUICE_LOG` once.
pub fn init() {
    INIT.call_once(|| {
        let level = match std::env::var("SLUICE_LOG").as_deref() {
            Ok("error") => Level::Error,
            Ok("warn") => Level::Warn,
            Ok("debug") | Ok("trace") => Level::Debug,
            _ => Level::Info,
        };
        LEVEL.store(level as u8, Ordering::Relaxed);
    });
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// A log line being built; emitted as one `write` so lines from shards never interleave.
pub struct Line(String);

impl Line {
    pub fn new(level: Level, event: &str) -> Self {
        let mut s = String::with_capacity(160);
        s.push_str("ts=");
        push_timestamp(&mut s);
        s.push_str(" level=");
        s.push_str(level.as_str());
        s.push_str(" event=");
        s.push_str(event);
        Line(s)
    }

    pub fn field(&mut self, key: &str, value: &dyn Display) {
        let start = self.0.len();
        self.0.push(' ');
        self.0.push_str(key);
        self.0.push('=');
        let value_start = self.0.len();
        let _ = write!(self.0, "{value}");
        let needs_quotes = self.0.len() == value_start
            || self.0[value_start..]
                .bytes()
                .any(|b| b <= b' ' || b == b'"' || b == b'=' || b == 0x7f);
        if needs_quotes {
            let raw: String = self.0[value_start..].to_owned();
            self.0.truncate(value_start);
            let _ = write!(self.0, "{raw:?}");
        }
        debug_assert!(self.0.len() > start);
    }

    pub fn emit(mut self) {
        self.0.push('\n');
        let _ = std::io::stderr().lock().write_all(self.0.as_bytes());
    }
}

fn push_timestamp(s: &mut String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    s.push_str(&rfc3339_ms(now.as_millis() as u64));
}

/// Milliseconds since the Unix epoch as RFC 3339 in UTC
/// (`2026-12-06T11:42:42.036Z`), for logs and human-facing output.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Logs one event: `event!(Level::Info, "listening", target = name, shard = id)`.
#[macro_export]
macro_rules! event {
    ($level:expr, $event:expr $(, $key:ident = $value:expr)* $(,)?) => {
        if $crate::log::enabled($level) {
            #[allow(unused_mut)]
            let mut line = $crate::log::Line::new($level, $event);
            $( line.field(stringify!($key), &$value); )*
            line.emit();
        }
    };
}

#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::event!($crate::log::Level::Info, $($t)*) }; }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::event!($crate::log::Level::Warn, $($t)*) }; }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::event!($crate::log::Level::Error, $($t)*) }; }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::event!($crate::log::Level::Debug, $($t)*) }; }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_557_362_036), "2026-12-06T11:42:42.036Z");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_418), (2025, 11, 26));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn quoting() {
        let mut l = Line::new(Level::Info, "x");
        l.field("a", &"plain");
        l.field("b", &"two words");
        l.field("c", &"");
        assert!(
            l.0.ends_with(r#"event=x a=plain b="two words" c="""#),
            "{}",
            l.0
        );
    }
}
