//! The detectors' prefilter: byte classes of 64 bytes at a time as bit masks,
//! with an AVX-512 VBMI table lookup, AVX-512 or AVX2 compares where the CPU
//! has them (the [`Isa`] a masker picked once) and a portable loop elsewhere.
//!
//! Windows overlap so the detectors' bit logic can look one byte back and seven
//! ahead without carrying state: the window for the bytes `b..b + STRIDE` covers
//! `b - 1..b + 63`, and bit `k` of each mask is byte `b - 1 + k` (the byte
//! before the buffer and those after it read as zero, which is in no class).

#[cfg(target_arch = "x86_64")]
use crate::isa::Kind;
use crate::Isa;

/// Bytes reported per window.
pub const STRIDE: usize = 56;

/// The bits of a window that are reported (bytes `b..b + STRIDE`).
const REPORTED: u64 = ((1 << STRIDE) - 1) << 1;

/// What the detectors need of one window; bit `k` is byte `b - 1 + k`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `0-9`, every bit.
    pub digit: u64,
    /// Space, `-`, `.`, every bit.
    pub joiner: u64,
    /// Where a check starts on the byte itself (reported bits only):
    /// - `@ + : ( J`;
    /// - a capital followed by another (IBAN, `AKIA`, `AIza`, `BEGIN`);
    /// - an `e` with `re` two bytes on (`eare` of `Bearer`);
    /// - `_` or `-` after a lowercase letter (inside a token prefix).
    pub single: u64,
    /// The bits that stand for this window's own bytes: 1 to [`STRIDE`],
    /// fewer in the buffer's last window.
    pub report: u64,
}

impl Masks {
    /// The window's triggers, from its classes.
    pub fn window(&self) -> Window {
        let caps = self.upper & (self.upper >> 1);
        let eare = self.e & (self.r >> 2) & (self.e >> 3);
        let api = self.sep & (self.lower << 1);
        Window {
            digit: self.digit,
            joiner: self.joiner,
            single: (self.rare | caps | eare | api) & REPORTED,
            report: REPORTED,
        }
    }
}

/// One window's classes; bit `k` is byte `b - 1 + k`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Masks {
    /// `0-9`.
    pub digit: u64,
    /// `A-Z`.
    pub upper: u64,
    /// What joins the digit groups of a number: space, `-`, `.`.
    pub joiner: u64,
    /// Bytes that start a detector's check on their own: `@ + : ( J`.
    pub rare: u64,
    /// `a-z`.
    pub lower: u64,
    /// What follows a token prefix: `_`, `-`.
    pub sep: u64,
    pub e: u64,
    pub r: u64,
}

const RARE: [u8; 5] = [b'@', b'+', b':', b'(', b'J'];

/// Portable classification of one 64-byte block.
pub fn classify_scalar(block: &[u8; 64]) -> Masks {
    let mut m = Masks::default();
    for (k, &c) in block.iter().enumerate() {
        let bit = 1u64 << k;
        let set = |mask: &mut u64, yes: bool| *mask |= if yes { bit } else { 0 };
        set(&mut m.digit, c.is_ascii_digit());
        set(&mut m.upper, c.is_ascii_uppercase());
        set(&mut m.joiner, matches!(c, b' ' | b'-' | b'.'));
        set(&mut m.rare, RARE.contains(&c));
        set(&mut m.lower, c.is_ascii_lowercase());
        set(&mut m.sep, matches!(c, b'_' | b'-'));
        set(&mut m.e, c == b'e');
        set(&mut m.r, c == b'r');
    }
    m
}

/// Class bits of each ASCII byte, for the table-lookup classifier.
const DIGIT: u8 = 1;
const UPPER: u8 = 2;
const JOINER: u8 = 4;
const RARE_BIT: u8 = 8;
const LOWER: u8 = 16;
const SEP: u8 = 32;
const E: u8 = 64;
const R: u8 = 128;

const fn class_table() -> [u8; 128] {
    let mut t = [0u8; 128];
    let mut c = 0;
    while c < 128 {
        let b = c as u8;
        let mut bits = 0;
        if b.is_ascii_digit() {
            bits |= DIGIT;
        }
        if b.is_ascii_uppercase() {
            bits |= UPPER;
        }
        if b == b' ' || b == b'-' || b == b'.' {
            bits |= JOINER;
        }
        let mut k = 0;
        while k < RARE.len() {
            if RARE[k] == b {
                bits |= RARE_BIT;
            }
            k += 1;
        }
        if b.is_ascii_lowercase() {
            bits |= LOWER;
        }
        if b == b'_' || b == b'-' {
            bits |= SEP;
        }
        bits |= match b {
            b'e' => E,
            b'r' => R,
            _ => 0,
        };
        t[c] = bits;
        c += 1;
    }
    t
}

static CLASSES: [u8; 128] = class_table();

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Masks, CLASSES, DIGIT, E, JOINER, LOWER, R, RARE, RARE_BIT, SEP, UPPER};
    use std::arch::x86_64::*;

    /// One table lookup per byte (`vpermi2b` over the 128 ASCII classes), then
    /// one test per class.
    ///
    /// # Safety
    /// The CPU has AVX-512 BW and VBMI and `p` points at 64 readable bytes.
    #[target_feature(enable = "avx512bw,avx512vbmi")]
    pub unsafe fn classify_vbmi(p: *const u8) -> Masks {
        // SAFETY: the caller guarantees 64 readable bytes at `p`; the table
        // is 128 bytes.
        let (x, lo, hi) = unsafe {
            (
                _mm512_loadu_si512(p.cast()),
                _mm512_loadu_si512(CLASSES.as_ptr().cast()),
                _mm512_loadu_si512(CLASSES.as_ptr().add(64).cast()),
            )
        };
        // Bytes >= 0x80 are in no class.
        let ascii = !_mm512_movepi8_mask(x);
        let cls = _mm512_maskz_permutex2var_epi8(ascii, lo, x, hi);
        let has = |bit: u8| _mm512_test_epi8_mask(cls, _mm512_set1_epi8(bit as i8));
        Masks {
            digit: has(DIGIT),
            upper: has(UPPER),
            joiner: has(JOINER),
            rare: has(RARE_BIT),
            lower: has(LOWER),
            sep: has(SEP),
            e: has(E),
            r: has(R),
        }
    }

    /// `t[n]` is the member of `set` whose low nibble is `n`, or a byte whose
    /// low nibble is not `n`: `pshufb(t, x) == x` then says `x` is in `set`
    /// (`pshufb` gives 0 for bytes >= 0x80, which are in no set).
    const fn member_table(set: &[u8]) -> [u8; 16] {
        let mut t = [0u8; 16];
        let mut n = 0;
        while n < 16 {
            t[n] = n as u8 ^ 1;
            n += 1;
        }
        let mut k = 0;
        while k < set.len() {
            t[(set[k] & 15) as usize] = set[k];
            k += 1;
        }
        t
    }

    /// `x`, with the compiler unable to see that it came from a vector
    /// compare. Otherwise LLVM turns the bit shifts the detectors do on masks
    /// into shuffles of 64 one-bit lanes, which it then lowers a byte at a
    /// time (several times slower than the whole scan).
    #[inline(always)]
    pub(super) fn opaque(mut x: u32) -> u32 {
        // SAFETY: an empty instruction template: no memory, stack or flags
        // touched.
        unsafe {
            std::arch::asm!("/* {0:e} */", inout(reg) x, options(pure, nomem, nostack, preserves_flags));
        }
        x
    }

    const JOINERS: [u8; 16] = member_table(b" -.");
    const RARE_NOT_J: [u8; 16] = member_table(b"@+:(");
    const SEPS: [u8; 16] = member_table(b"_-");

    /// The window at `p` (its bit 0), straight to its triggers: no class masks
    /// in between, three mask extractions per 32 bytes. Neighbours come from
    /// loads one byte before and up to three after.
    ///
    /// # Safety
    /// The CPU has AVX2 and `p - 1..p + 67` is readable.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn window_avx2(p: *const u8) -> super::Window {
        let table = |t: &[u8; 16]| {
            // SAFETY: 16 readable bytes.
            _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(t.as_ptr().cast()) })
        };
        let (joiners, rare_t, seps) = (table(&JOINERS), table(&RARE_NOT_J), table(&SEPS));
        let set1 = |c: u8| _mm256_set1_epi8(c as i8);
        // `lo <= x <= hi` for ASCII bounds (bytes >= 0x80 compare negative).
        let range = |x: __m256i, lo: u8, hi: u8| {
            _mm256_and_si256(
                _mm256_cmpgt_epi8(x, set1(lo - 1)),
                _mm256_cmpgt_epi8(set1(hi + 1), x),
            )
        };
        let member = |t: __m256i, x: __m256i| _mm256_cmpeq_epi8(_mm256_shuffle_epi8(t, x), x);
        let eq = |x: __m256i, c: u8| _mm256_cmpeq_epi8(x, set1(c));
        let bits = |v: __m256i| opaque(_mm256_movemask_epi8(v) as u32) as u64;
        let mut w = super::Window::default();
        for half in 0..2 {
            // SAFETY: the caller guarantees `p - 1..p + 67` readable.
            let [xm, x0, x1, x2, x3] = [-1isize, 0, 1, 2, 3]
                .map(|d| unsafe { _mm256_loadu_si256(p.offset(32 * half + d).cast()) });
            let rare = _mm256_or_si256(member(rare_t, x0), eq(x0, b'J'));
            let caps = _mm256_and_si256(range(x0, b'A', b'Z'), range(x1, b'A', b'Z'));
            let eare = _mm256_and_si256(_mm256_and_si256(eq(x0, b'e'), eq(x2, b'r')), eq(x3, b'e'));
            let api = _mm256_and_si256(member(seps, x0), range(xm, b'a', b'z'));
            let single = _mm256_or_si256(_mm256_or_si256(rare, caps), _mm256_or_si256(eare, api));
            let shift = 32 * half as u32;
            w.digit |= bits(range(x0, b'0', b'9')) << shift;
            w.joiner |= bits(member(joiners, x0)) << shift;
            w.single |= bits(single) << shift;
        }
        w.single &= super::REPORTED;
        w.report = super::REPORTED;
        w
    }

    /// [`classify_vbmi`] as a window.
    ///
    /// # Safety
    /// As for [`classify_vbmi`].
    #[inline]
    #[target_feature(enable = "avx512bw,avx512vbmi")]
    pub unsafe fn window_vbmi(p: *const u8) -> super::Window {
        // SAFETY: as the caller guarantees.
        unsafe { classify_vbmi(p) }.window()
    }

    /// [`classify_avx512`] as a window.
    ///
    /// # Safety
    /// As for [`classify_avx512`].
    #[inline]
    #[target_feature(enable = "avx512bw")]
    pub unsafe fn window_avx512(p: *const u8) -> super::Window {
        // SAFETY: as the caller guarantees.
        unsafe { classify_avx512(p) }.window()
    }

    /// # Safety
    /// The CPU has AVX-512 BW and `p` points at 64 readable bytes.
    #[target_feature(enable = "avx512bw")]
    pub unsafe fn classify_avx512(p: *const u8) -> Masks {
        // SAFETY: the caller guarantees 64 readable bytes at `p`.
        let x = unsafe { _mm512_loadu_si512(p.cast()) };
        let eq = |c: u8| _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(c as i8));
        let range = |lo: u8, n: u8| {
            _mm512_cmplt_epu8_mask(
                _mm512_sub_epi8(x, _mm512_set1_epi8(lo as i8)),
                _mm512_set1_epi8(n as i8),
            )
        };
        Masks {
            digit: range(b'0', 10),
            upper: range(b'A', 26),
            joiner: eq(b' ') | eq(b'-') | eq(b'.'),
            rare: RARE.iter().fold(0, |acc, &c| acc | eq(c)),
            lower: range(b'a', 26),
            sep: eq(b'_') | eq(b'-'),
            e: eq(b'e'),
            r: eq(b'r'),
        }
    }
}

/// Digits and number separators of the 64 bytes from a position; bit `i` is
/// byte `p + i` (bytes past the buffer's end are in no class). The number
/// validators read these instead of walking the bytes one by one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Numeric {
    /// `0-9`.
    pub digit: u64,
    /// Space or `-`.
    pub space_dash: u64,
    /// `.`.
    pub dot: u64,
}

impl Numeric {
    /// The classes of `buf[p..p + 64]`.
    #[inline]
    pub fn at(buf: &[u8], p: usize) -> Numeric {
        let rest = &buf[p.min(buf.len())..];
        match rest.first_chunk::<64>() {
            Some(block) => Numeric::of(block),
            None => {
                let mut tmp = [0u8; 64];
                tmp[..rest.len()].copy_from_slice(rest);
                Numeric::of(&tmp)
            }
        }
    }

    #[inline]
    fn of(block: &[u8; 64]) -> Numeric {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::*;
            let mut n = Numeric::default();
            // SAFETY: SSE2 is part of x86-64 (no run-time check needed); the
            // loads read 16 of the block's 64 bytes each.
            unsafe {
                let set1 = |c: u8| _mm_set1_epi8(c as i8);
                for q in 0..4 {
                    let x = _mm_loadu_si128(block.as_ptr().add(16 * q).cast());
                    let digit = _mm_and_si128(
                        _mm_cmpgt_epi8(x, set1(b'0' - 1)),
                        _mm_cmplt_epi8(x, set1(b'9' + 1)),
                    );
                    let space_dash =
                        _mm_or_si128(_mm_cmpeq_epi8(x, set1(b' ')), _mm_cmpeq_epi8(x, set1(b'-')));
                    let dot = _mm_cmpeq_epi8(x, set1(b'.'));
                    let bits = |v| u64::from(x86::opaque(_mm_movemask_epi8(v) as u32)) << (16 * q);
                    n.digit |= bits(digit);
                    n.space_dash |= bits(space_dash);
                    n.dot |= bits(dot);
                }
            }
            n
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let mut n = Numeric::default();
            for (i, &c) in block.iter().enumerate() {
                n.digit |= u64::from(c.is_ascii_digit()) << i;
                n.space_dash |= u64::from(c == b' ' || c == b'-') << i;
                n.dot |= u64::from(c == b'.') << i;
            }
            n
        }
    }
}

/// Calls `f(b, window)` for each window of `buf`, `b` stepping by [`STRIDE`].
/// A macro rather than a function taking the classifier, so that the loop is
/// expanded inside each `#[target_feature]` function and the classification
/// inlines into it. `$classify` takes a pointer `p` (bit 0 of the window) with
/// `p - 1..p + 67` readable.
macro_rules! window_loop {
    ($buf:expr, $f:expr, $classify:path) => {{
        let (buf, mut f): (&[u8], _) = ($buf, $f);
        let n = buf.len();
        // The first window (nothing before it) and the last two at most:
        // zero-padded, `tmp[j]` is byte `b - 2 + j`.
        let padded = |b: usize| {
            let mut tmp = [0u8; 68];
            let lo = b.saturating_sub(2);
            let hi = (b + 66).min(n);
            let at = lo + 2 - b;
            tmp[at..at + hi - lo].copy_from_slice(&buf[lo..hi]);
            // SAFETY: `p - 1..p + 67` is `tmp[0..68]`.
            let mut w = unsafe { $classify(tmp.as_ptr().add(1)) };
            w.report = ((1u64 << (n - b).min(STRIDE)) - 1) << 1;
            w
        };
        let mut b = 0;
        if n > 0 {
            f(0, &padded(0));
            b = STRIDE;
        }
        // Every window whose bytes `b - 2..b + 66` are in the buffer: no bounds
        // to check, the whole window reported.
        while b + 66 <= n {
            // SAFETY: `p - 1..p + 67` is `b - 2..b + 66`, inside `buf`.
            f(b, &unsafe { $classify(buf.as_ptr().add(b - 1)) });
            b += STRIDE;
        }
        while b < n {
            f(b, &padded(b));
            b += STRIDE;
        }
    }};
}

/// The portable classifier as a window.
///
/// # Safety
/// `p..p + 64` is readable.
unsafe fn window_scalar(p: *const u8) -> Window {
    // SAFETY: the caller guarantees 64 readable bytes.
    classify_scalar(unsafe { &*p.cast::<[u8; 64]>() }).window()
}

/// Classifies `buf` window by window with the best instructions the CPU has
/// ([`Isa::detect`], memoised); a masker holds its own [`Isa`] and calls
/// [`for_each_window_on`].
#[inline(always)]
pub fn for_each_window<F: FnMut(usize, &Window)>(buf: &[u8], f: F) {
    for_each_window_on(Isa::detect(), buf, f)
}

/// Classifies `buf` window by window with the instructions of `isa` (no CPU
/// feature detection here: the token says what the CPU has).
#[inline(always)]
pub fn for_each_window_on<F: FnMut(usize, &Window)>(isa: Isa, buf: &[u8], f: F) {
    #[cfg(target_arch = "x86_64")]
    match isa.kind() {
        // An `Isa` other than the portable one is only ever made for an
        // instruction set the CPU has (see `crate::isa`).
        // SAFETY: the CPU has AVX-512 BW and VBMI.
        Kind::Avx512Vbmi => return unsafe { windows_vbmi(buf, f) },
        // SAFETY: the CPU has AVX-512 BW.
        Kind::Avx512Bw => return unsafe { windows_avx512(buf, f) },
        // SAFETY: the CPU has AVX2.
        Kind::Avx2 => return unsafe { windows_avx2(buf, f) },
        Kind::Portable => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    window_loop!(buf, f, window_scalar)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn windows_avx2<F: FnMut(usize, &Window)>(buf: &[u8], f: F) {
    window_loop!(buf, f, x86::window_avx2)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw,avx512vbmi")]
unsafe fn windows_vbmi<F: FnMut(usize, &Window)>(buf: &[u8], f: F) {
    window_loop!(buf, f, x86::window_vbmi)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw")]
unsafe fn windows_avx512<F: FnMut(usize, &Window)>(buf: &[u8], f: F) {
    window_loop!(buf, f, x86::window_avx512)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SIMD classifiers agree with the portable one on every byte value in
    /// every lane.
    #[test]
    fn simd_matches_scalar() {
        // The window's 64 bytes with one before and three after.
        let mut ext = [0u8; 68];
        for round in 0..=255u8 {
            for (k, b) in ext.iter_mut().enumerate() {
                *b = round.wrapping_add((k as u8).wrapping_mul(37));
            }
            let block: [u8; 64] = ext[1..65].try_into().unwrap();
            let want = classify_scalar(&block);
            #[cfg(target_arch = "x86_64")]
            for isa in Isa::available() {
                match isa.kind() {
                    // SAFETY: available; `p - 1..p + 67` is `ext`.
                    Kind::Avx2 => assert_eq!(
                        unsafe { x86::window_avx2(ext.as_ptr().add(1)) },
                        want.window()
                    ),
                    // SAFETY: available; 64 bytes.
                    Kind::Avx512Bw => {
                        assert_eq!(unsafe { x86::classify_avx512(block.as_ptr()) }, want)
                    }
                    // SAFETY: available; 64 bytes.
                    Kind::Avx512Vbmi => {
                        assert_eq!(unsafe { x86::classify_vbmi(block.as_ptr()) }, want)
                    }
                    Kind::Portable => {}
                }
            }
        }
    }

    /// The AVX2 triggers look at neighbour bytes through overlapping loads:
    /// checked against the portable classes on random windows dense in the
    /// bytes the triggers pair up (two capitals, `e?re`, a separator after a
    /// lowercase letter), when this CPU has AVX2.
    #[test]
    fn avx2_neighbours_match_scalar() {
        #[cfg(target_arch = "x86_64")]
        if Isa::from_name("avx2").is_ok() {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut ext = [0u8; 68];
            for _ in 0..20_000 {
                for b in ext.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let set = b"AZBezrar_-.@+:(J09 \x80\xff";
                    *b = set[(x % set.len() as u64) as usize];
                }
                let block: [u8; 64] = ext[1..65].try_into().unwrap();
                // SAFETY: checked above; `p - 1..p + 67` is `ext`.
                let w = unsafe { x86::window_avx2(ext.as_ptr().add(1)) };
                assert_eq!(w, classify_scalar(&block).window(), "{ext:?}");
            }
        }
    }

    /// The portable path gives the same windows as every path this CPU runs,
    /// so the detectors behave alike on machines without AVX2.
    #[test]
    fn portable_windows_match() {
        let isas = Isa::available();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for n in [
            0, 1, 2, 7, 56, 57, 64, 65, 66, 67, 100, 122, 333, 1000, 20_000,
        ] {
            let buf: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let set = b"09AZaer @+:(_-J.\x80\xff";
                    set[(x % set.len() as u64) as usize]
                })
                .collect();
            let mut portable = Vec::new();
            window_loop!(&buf, |b, w: &Window| portable.push((b, *w)), window_scalar);
            for &isa in &isas {
                let mut fast = Vec::new();
                for_each_window_on(isa, &buf, |b, m| fast.push((b, *m)));
                assert_eq!(fast, portable, "{isa}, n = {n}");
            }
        }
    }

    /// The number masks at every position, the buffer's tail included.
    #[test]
    fn numeric_masks() {
        let buf: Vec<u8> = (0..300u32)
            .map(|i| b"0159 -.a_\x80:/"[(i * 7 % 12) as usize])
            .collect();
        for p in 0..=buf.len() {
            let n = Numeric::at(&buf, p);
            for i in 0..64 {
                let c = buf.get(p + i).copied().unwrap_or(0);
                assert_eq!(n.digit >> i & 1 == 1, c.is_ascii_digit(), "{p}+{i}");
                assert_eq!(n.space_dash >> i & 1 == 1, c == b' ' || c == b'-');
                assert_eq!(n.dot >> i & 1 == 1, c == b'.');
            }
        }
    }

    /// Every byte is reported once, with its window's bit `k` at `b - 1 + k`,
    /// on every path.
    #[test]
    fn windows_cover_every_byte_once() {
        for isa in Isa::available() {
            windows_cover_every_byte_once_on(isa);
        }
        // The memoised best path.
        for_each_window(b"0123", |b, m| assert_eq!((b, m.digit), (0, 0b11110)));
    }

    fn windows_cover_every_byte_once_on(isa: Isa) {
        for n in [0, 1, 55, 56, 57, 63, 64, 65, 112, 119, 120, 200, 1000] {
            let buf: Vec<u8> = (0..n)
                .map(|i| if i % 3 == 0 { b'7' } else { b'x' })
                .collect();
            let mut seen = vec![0; n];
            for_each_window_on(isa, &buf, |b, m| {
                for k in 1..=STRIDE {
                    let i = b + k - 1;
                    if i < n {
                        seen[i] += 1;
                        assert_eq!(m.digit >> k & 1 == 1, buf[i] == b'7', "byte {i} of {n}");
                    }
                }
                if b > 0 {
                    assert_eq!(m.digit & 1 == 1, buf[b - 1] == b'7');
                } else {
                    assert_eq!(m.digit & 1, 0);
                }
            });
            assert!(seen.iter().all(|&s| s == 1), "{isa}, n = {n}");
        }
    }
}
