//! Masking a byte stream that arrives in chunks (TCP segments, HTTP chunks, huge
//! rows): a value split across chunks is found exactly as if it came whole.
//!
//! The masker holds back a window of the most recent bytes (longer than any
//! value it detects), plus some already-released bytes as left context for the
//! detectors' boundary checks. Bytes leave only once no value can still be
//! completed across them, so memory per stream is bounded by the window, not by
//! the stream's size. A PEM private key longer than the window is masked from
//! its `BEGIN` line on until its `END` line (fail closed).

use crate::detect::{self, Detector};
use crate::mask::{self, Style};
use crate::{Isa, Masker, Profile};

/// Bytes held back: longer than any entity the detectors find.
pub const WINDOW: usize = 1024;
/// Released bytes kept for left-boundary checks.
pub const CONTEXT: usize = 64;
/// Largest buffered private key before it is masked blind.
const MAX_HELD: usize = 64 * 1024;

pub struct StreamMasker {
    masker: Masker,
    /// `context` bytes already released, then the held-back bytes.
    buf: Vec<u8>,
    context: usize,
    /// Inside a private key whose end has not arrived: mask until `-----END`.
    in_key: bool,
}

impl StreamMasker {
    /// A stream masker on the best instruction set this CPU has
    /// ([`Isa::detect`]).
    pub fn new(profile: Profile) -> StreamMasker {
        StreamMasker::with_isa(profile, Isa::detect())
    }

    /// A stream masker whose prefilter runs on `isa`.
    pub fn with_isa(profile: Profile, isa: Isa) -> StreamMasker {
        StreamMasker {
            masker: Masker::with_isa(profile, isa),
            buf: Vec::with_capacity(2 * WINDOW),
            context: 0,
            in_key: false,
        }
    }

    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// Bytes held right now (bounded by the window, the left context and one chunk).
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next chunk; appends the bytes that are final (masked) to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.buf.extend_from_slice(chunk);
        if self.in_key {
            self.continue_key(out);
        }
        let held = self.buf.len() - self.context;
        if held <= WINDOW {
            return;
        }
        self.release(self.buf.len() - WINDOW, out);
    }

    /// The stream ended: masks and releases everything held.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.in_key {
            let start = self.context;
            let n = self.buf.len();
            mask::apply(
                &mut self.buf,
                start..n,
                Some(Detector::PrivateKey),
                Style::Full,
            );
        } else {
            self.release(self.buf.len(), out);
            return;
        }
        out.extend_from_slice(&self.buf[self.context..]);
        self.buf.clear();
        self.context = 0;
    }

    /// Masks the finds of the secret (or the other) custom entities below
    /// `cut`; one straddling the cut moves it back and waits for the rest of
    /// its bytes. Secrets are hidden whole, other entities redacted.
    fn entities(&mut self, secret: bool, cut: &mut usize, at_end: bool) {
        let entities = self.masker.profile.entities.clone();
        for e in entities.iter().filter(|e| e.secret == secret) {
            self.masker.spans.clear();
            e.find(&self.buf, &mut self.masker.spans);
            if !at_end {
                for r in &self.masker.spans {
                    if r.start < *cut && r.end > *cut && r.start >= self.context {
                        *cut = r.start;
                    }
                }
            }
            for r in self.masker.spans.drain(..) {
                if r.start < self.context || (r.end > *cut && !at_end) {
                    continue;
                }
                let style = if secret { Style::Full } else { Style::Redact };
                mask::apply(&mut self.buf, r, None, style);
                self.masker.counts.entity(e.name);
            }
        }
    }

    /// Masks what is final below `cut` (moved back to the start of any value that
    /// straddles it) and releases it.
    fn release(&mut self, cut: usize, out: &mut Vec<u8>) {
        let mut cut = cut;
        let at_end = cut == self.buf.len();
        // Secrets first, hidden whole, before a detector masks part of one
        // (and so hides the rest from its pattern).
        self.entities(true, &mut cut, at_end);
        detect::scan_on(
            self.masker.isa,
            &self.buf,
            &self.masker.profile.detectors,
            &mut self.masker.hits,
        );
        if !at_end {
            // Finds may overlap: moving the cut back to one can make an earlier
            // one straddle it, so repeat until nothing straddles. A chain of
            // overlapping finds longer than half the window (no real value is)
            // stops at a floor: what straddles it is masked whole below.
            let floor = cut.saturating_sub(WINDOW / 2).max(self.context);
            loop {
                let before = cut;
                for h in &self.masker.hits {
                    if h.range.start < cut && h.range.end > cut && h.range.start >= self.context {
                        cut = match h.detector {
                            // A key waits for its END line (or is masked blind).
                            Detector::PrivateKey => h.range.start,
                            _ => h.range.start.max(floor),
                        };
                    }
                }
                if cut == before {
                    break;
                }
            }
        }
        for h in &self.masker.hits {
            // Values in the context were decided when they were released; one
            // past the cut is decided once all its bytes are here, except one
            // straddling the floor of a long chain, masked whole now.
            let straddles = h.range.start < cut && h.detector != Detector::PrivateKey;
            if h.range.start < self.context || (h.range.end > cut && !at_end && !straddles) {
                continue;
            }
            if h.detector == Detector::PrivateKey && h.range.end == self.buf.len() && !at_end {
                continue;
            }
            mask::apply(
                &mut self.buf,
                h.range.clone(),
                Some(h.detector),
                Style::Redact,
            );
            self.masker.counts.by_detector[h.detector as usize] += 1;
        }
        // Custom entities, after the built-in detectors as for whole values.
        self.entities(false, &mut cut, at_end);
        // An unterminated key that no longer fits: mask it blind from here on.
        if cut <= self.context && self.buf.len() - self.context > MAX_HELD {
            self.in_key = true;
            self.continue_key(out);
            return;
        }
        out.extend_from_slice(&self.buf[self.context..cut]);
        // Keep a little released context for the next scan's boundary checks.
        let keep_from = cut.saturating_sub(CONTEXT);
        self.buf.drain(..keep_from);
        self.context = cut - keep_from;
    }

    /// Masks held bytes until the key's `-----END`, releasing them.
    fn continue_key(&mut self, out: &mut Vec<u8>) {
        let held = &self.buf[self.context..];
        let end = memchr::memmem::find(held, b"-----END ").map(|p| self.context + p);
        let stop = end.unwrap_or(self.buf.len());
        let start = self.context;
        mask::apply(
            &mut self.buf,
            start..stop,
            Some(Detector::PrivateKey),
            Style::Full,
        );
        out.extend_from_slice(&self.buf[start..stop]);
        self.buf.drain(..stop);
        self.context = 0;
        if end.is_some() {
            self.in_key = false;
            self.masker.counts.by_detector[Detector::PrivateKey as usize] += 1;
        }
    }
}
