//! The detectors' prefilter: byte classes of 64 bytes at a time as bit masks,
//! with an AVX-512 VBMI table lookup, AVX-512 or AVX2 compares where the CPU
//! has them (checked at run time) and a portable loop elsewhere.
//!
//! Windows overlap so the detectors' bit logic can look one byte back and seven
//! ahead without carrying state: the window for the bytes `b..b + STRIDE` covers
//! `b - 1..b + 63`, and bit `k` of each mask is byte `b - 1 + k` (the byte
//! before the buffer and those after it read as zero, which is in no class).

/// Bytes reported per window.
pub const STRIDE: usize = 56;

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

    /// # Safety
    /// The CPU has AVX2 and `p` points at 64 readable bytes.
    #[target_feature(enable = "avx2")]
    pub unsafe fn classify_avx2(p: *const u8) -> Masks {
        let mut m = Masks::default();
        for half in 0..2 {
            // SAFETY: the caller guarantees 64 readable bytes at `p`.
            let x = unsafe { _mm256_loadu_si256(p.add(32 * half).cast()) };
            let eq = |c: u8| _mm256_cmpeq_epi8(x, _mm256_set1_epi8(c as i8));
            // `lo <= x < lo + n`, unsigned: min(x - lo, n - 1) == x - lo.
            let range = |lo: u8, n: u8| {
                let t = _mm256_sub_epi8(x, _mm256_set1_epi8(lo as i8));
                _mm256_cmpeq_epi8(_mm256_min_epu8(t, _mm256_set1_epi8((n - 1) as i8)), t)
            };
            let bits = |v: __m256i| (_mm256_movemask_epi8(v) as u32 as u64) << (32 * half);
            let rare = RARE[1..]
                .iter()
                .fold(eq(RARE[0]), |acc, &c| _mm256_or_si256(acc, eq(c)));
            m.digit |= bits(range(b'0', 10));
            m.upper |= bits(range(b'A', 26));
            m.joiner |= bits(_mm256_or_si256(
                _mm256_or_si256(eq(b' '), eq(b'-')),
                eq(b'.'),
            ));
            m.rare |= bits(rare);
            m.lower |= bits(range(b'a', 26));
            m.sep |= bits(_mm256_or_si256(eq(b'_'), eq(b'-')));
            m.e |= bits(eq(b'e'));
            m.r |= bits(eq(b'r'));
        }
        m
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

/// Calls `f(b, masks)` for each window of `buf`, `b` stepping by [`STRIDE`].
#[inline(always)]
fn windows<C, F>(buf: &[u8], classify: C, mut f: F)
where
    C: Fn(&[u8; 64]) -> Masks,
    F: FnMut(usize, &Masks),
{
    let n = buf.len();
    let mut b = 0;
    while b < n {
        let m = match buf.get(b.wrapping_sub(1)..b + 63) {
            Some(w) if b > 0 => classify(w.try_into().expect("64 bytes")),
            _ => {
                // The first window (no byte before) and the tail: zero-padded.
                let mut tmp = [0u8; 64];
                let lo = b.saturating_sub(1);
                let hi = (b + 63).min(n);
                let at = lo + 1 - b;
                tmp[at..at + hi - lo].copy_from_slice(&buf[lo..hi]);
                classify(&tmp)
            }
        };
        f(b, &m);
        b += STRIDE;
    }
}

/// Classifies `buf` window by window with the best instructions the CPU has.
#[inline(always)]
pub fn for_each_window<F: FnMut(usize, &Masks)>(buf: &[u8], f: F) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512vbmi")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the CPU has AVX-512 BW and VBMI.
            return unsafe { windows_vbmi(buf, f) };
        }
        if std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU has AVX-512 BW.
            return unsafe { windows_avx512(buf, f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { windows_avx2(buf, f) };
        }
    }
    windows(buf, classify_scalar, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn windows_avx2<F: FnMut(usize, &Masks)>(buf: &[u8], f: F) {
    // SAFETY: the CPU has AVX2 (the caller checked); the block is 64 bytes.
    windows(buf, |w| unsafe { x86::classify_avx2(w.as_ptr()) }, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw,avx512vbmi")]
unsafe fn windows_vbmi<F: FnMut(usize, &Masks)>(buf: &[u8], f: F) {
    // SAFETY: the CPU has AVX-512 BW and VBMI (the caller checked); the block
    // is 64 bytes.
    windows(buf, |w| unsafe { x86::classify_vbmi(w.as_ptr()) }, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw")]
unsafe fn windows_avx512<F: FnMut(usize, &Masks)>(buf: &[u8], f: F) {
    // SAFETY: the CPU has AVX-512 BW (the caller checked); the block is 64 bytes.
    windows(buf, |w| unsafe { x86::classify_avx512(w.as_ptr()) }, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SIMD classifiers agree with the portable one on every byte value in
    /// every lane.
    #[test]
    fn simd_matches_scalar() {
        let mut block = [0u8; 64];
        for round in 0..=255u8 {
            for (k, b) in block.iter_mut().enumerate() {
                *b = round.wrapping_add((k as u8).wrapping_mul(37));
            }
            let want = classify_scalar(&block);
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: checked above; 64 bytes.
                    assert_eq!(unsafe { x86::classify_avx2(block.as_ptr()) }, want);
                }
                if std::arch::is_x86_feature_detected!("avx512bw") {
                    // SAFETY: checked above; 64 bytes.
                    assert_eq!(unsafe { x86::classify_avx512(block.as_ptr()) }, want);
                }
                if std::arch::is_x86_feature_detected!("avx512vbmi")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                {
                    // SAFETY: checked above; 64 bytes.
                    assert_eq!(unsafe { x86::classify_vbmi(block.as_ptr()) }, want);
                }
            }
        }
    }

    /// The portable path gives the same windows as the one this CPU runs, so
    /// the detectors behave alike on machines without AVX2.
    #[test]
    fn portable_windows_match() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for n in [0, 1, 7, 56, 57, 64, 100, 333, 1000] {
            let buf: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let set = b"09AZaer @+:(_-J.\x80\xff";
                    set[(x % set.len() as u64) as usize]
                })
                .collect();
            let (mut fast, mut portable) = (Vec::new(), Vec::new());
            for_each_window(&buf, |b, m| fast.push((b, *m)));
            windows(&buf, classify_scalar, |b, m| portable.push((b, *m)));
            assert_eq!(fast, portable, "n = {n}");
        }
    }

    /// Every byte is reported once, with its window's bit `k` at `b - 1 + k`.
    #[test]
    fn windows_cover_every_byte_once() {
        for n in [0, 1, 55, 56, 57, 63, 64, 65, 112, 119, 120, 200, 1000] {
            let buf: Vec<u8> = (0..n)
                .map(|i| if i % 3 == 0 { b'7' } else { b'x' })
                .collect();
            let mut seen = vec![0; n];
            for_each_window(&buf, |b, m| {
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
            assert!(seen.iter().all(|&s| s == 1), "n = {n}");
        }
    }
}
