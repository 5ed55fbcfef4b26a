//! The instruction set the detectors' prefilter ([`crate::classify`]) runs on,
//! chosen once: when a [`crate::Masker`] is built, not for every value.
//!
//! An [`Isa`] is a token: it can only be obtained for an instruction set this
//! CPU has ([`Isa::detect`], [`Isa::available`], [`Isa::from_name`]) or for the
//! portable code ([`Isa::portable`]), so the scan can run its SIMD code on the
//! token's word alone. What the CPU has is detected once per process and kept
//! in a static (as `memchr` does), so building a masker costs one atomic load.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::Error;

/// An instruction set the prefilter can run on: a token, only made for one
/// this CPU has (or the portable code), so holding it is the scan's licence
/// to run that set's instructions.
///
/// Ordered from the portable code to the best: `Isa::detect()` is the
/// greatest of `Isa::available()`.
///
/// ```
/// use sluice_masking::{Isa, Masker, Profile};
/// let best = Isa::detect();
/// assert!(Isa::available().contains(&best));
/// assert_eq!(Isa::from_name("portable").unwrap(), Isa::portable());
/// let m = Masker::with_isa(Profile::new(&["email"], &[]).unwrap(), Isa::portable());
/// assert_eq!(m.isa(), Isa::portable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Isa(Kind);

/// The prefilter's code paths, worst to best (the order [`Isa::detect`]
/// picks by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 AVX2 compares.
    Avx2,
    /// x86-64 AVX-512 BW compares.
    Avx512Bw,
    /// x86-64 AVX-512 BW with the VBMI table lookup.
    Avx512Vbmi,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Portable, Kind::Avx2, Kind::Avx512Bw, Kind::Avx512Vbmi];

    const fn name(self) -> &'static str {
        match self {
            Kind::Portable => "portable",
            Kind::Avx2 => "avx2",
            Kind::Avx512Bw => "avx512bw",
            Kind::Avx512Vbmi => "avx512vbmi",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The kinds this CPU runs, as [`Kind::bit`]s, with [`DETECTED`] set once
/// filled in (0: not detected yet).
static AVAILABLE: AtomicU8 = AtomicU8::new(0);
const DETECTED: u8 = 0x80;

/// [`AVAILABLE`], detecting the CPU's features on the first call. Racing
/// first calls each detect and store the same value.
fn available_bits() -> u8 {
    let bits = AVAILABLE.load(Ordering::Relaxed);
    if bits != 0 {
        return bits;
    }
    let bits = detect_bits();
    AVAILABLE.store(bits, Ordering::Relaxed);
    bits
}

fn detect_bits() -> u8 {
    #[allow(unused_mut)]
    let mut bits = DETECTED | Kind::Portable.bit();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            bits |= Kind::Avx2.bit();
        }
        if std::arch::is_x86_feature_detected!("avx512bw") {
            bits |= Kind::Avx512Bw.bit();
            if std::arch::is_x86_feature_detected!("avx512vbmi") {
                bits |= Kind::Avx512Vbmi.bit();
            }
        }
    }
    bits
}

impl Isa {
    /// The best instruction set this CPU has (detected once per process).
    pub fn detect() -> Isa {
        let bits = available_bits();
        let best = Kind::ALL.into_iter().rev().find(|k| bits & k.bit() != 0);
        Isa(best.unwrap_or(Kind::Portable))
    }

    /// The portable code: any CPU, the reference the SIMD paths must equal.
    pub const fn portable() -> Isa {
        Isa(Kind::Portable)
    }

    /// Every instruction set this CPU can run, the portable code first and
    /// [`Isa::detect`] last.
    pub fn available() -> Vec<Isa> {
        let bits = available_bits();
        Kind::ALL
            .into_iter()
            .filter(|k| bits & k.bit() != 0)
            .map(Isa)
            .collect()
    }

    /// An instruction set by name (`portable`, `avx2`, `avx512bw`,
    /// `avx512vbmi`, as [`Isa::name`] gives them), to force a path. `Err` if
    /// the name is unknown or this CPU does not have it.
    pub fn from_name(name: &str) -> Result<Isa, Error> {
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| Error::UnknownIsa(name.to_owned()))?;
        if available_bits() & kind.bit() == 0 {
            return Err(Error::UnsupportedIsa(kind.name()));
        }
        Ok(Isa(kind))
    }

    /// Its name, as [`Isa::from_name`] takes it.
    pub const fn name(self) -> &'static str {
        self.0.name()
    }

    /// The path the prefilter dispatches on.
    pub(crate) fn kind(self) -> Kind {
        self.0
    }
}

/// [`Isa::detect`].
impl Default for Isa {
    fn default() -> Isa {
        Isa::detect()
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// [`Isa::from_name`].
impl std::str::FromStr for Isa {
    type Err = Error;
    fn from_str(name: &str) -> Result<Isa, Error> {
        Isa::from_name(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_once_and_every_path_named() {
        let all = Isa::available();
        assert_eq!(all.first(), Some(&Isa::portable()));
        assert_eq!(all.last(), Some(&Isa::detect()));
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(AVAILABLE.load(Ordering::Relaxed), 0, "memoised");
        for isa in &all {
            assert_eq!(Isa::from_name(isa.name()), Ok(*isa));
            assert_eq!(isa.to_string().parse::<Isa>(), Ok(*isa));
        }
        assert_eq!(
            Isa::from_name("sse9").unwrap_err().to_string(),
            "unknown instruction set `sse9`: expected portable, avx2, avx512bw or avx512vbmi"
        );
        // A path this CPU lacks cannot be forced (the token would be a lie).
        for kind in Kind::ALL {
            if !all.contains(&Isa(kind)) {
                assert_eq!(
                    Isa::from_name(kind.name()),
                    Err(Error::UnsupportedIsa(kind.name()))
                );
            }
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            all.contains(&Isa(Kind::Avx2)),
            std::arch::is_x86_feature_detected!("avx2")
        );
    }
}
