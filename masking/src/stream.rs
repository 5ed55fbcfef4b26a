//! Masking a byte stream that arrives in chunks (TCP segments, HTTP chunks, huge
//! rows): a value split across chunks is found exactly as if it came whole.
//!
//! The masker holds back a window of the most recent bytes (longer than any
//! value it detects), plus some already-released bytes as left context for the
//! detectors' boundary checks. Bytes leave only once no value can still be
//! completed across them, so memory per stream is bounded by the window, not by
//! the stream's size. A PEM private key longer than the window is masked from
//! its `BEGIN` line on until its `END` line (fail closed).
//!
//! Every decision is made on the text as it arrived: the held bytes and the
//! left context stay unmasked (but for the gateway's own secrets, which
//! [`Masker::mask_value`] also hides before anything else looks), and masks are
//! applied to the copy that is released. Masking one value first can therefore
//! never hide the next from its detector (a token that runs into a key's
//! `-----BEGIN` line, a JWT ending in `bearer`). A value whose detector reads
//! bytes well before the value (a key's header line, an AWS key id before its
//! secret) holds the release point back to where that reading starts.

use std::ops::Range;

use crate::detect::{self, Detector, Hit};
use crate::mask::{self, Style};
use crate::{Isa, Masker, Profile};

/// Bytes held back: longer than any entity the detectors find.
pub const WINDOW: usize = 1024;
/// Most released bytes kept as left context for the next scan: it starts at
/// the last separator (see `separator`) at most this far before the release
/// point, or this far back if there is none. The detectors need no more (what
/// a value's detector reads before the byte ahead of it holds the release
/// point back: see `anchor_before`).
pub const CONTEXT: usize = 128;
/// Fewest released bytes kept when the profile has custom entities (unless the
/// stream has fewer): a pattern may look further back than a detector.
pub const MIN_CONTEXT: usize = 64;
/// Largest buffered private key before it is masked blind.
const MAX_HELD: usize = 64 * 1024;
/// An AWS secret key is looked for within 200 bytes after its 20-byte key id,
/// whose left boundary is one byte before it.
const AWS_SECRET_REACH: usize = 200 + 20 + 1;
/// `-----END ` less one byte: held back while masking a key blind, so an END
/// line split across chunks is still seen.
const END_TAIL: usize = 8;

pub struct StreamMasker {
    masker: Masker,
    /// `context` bytes already released, then the held-back bytes: all as
    /// they arrived (but for the gateway's secrets, hidden in place).
    buf: Vec<u8>,
    context: usize,
    /// Values decided at the last release that run past its cut (the floor of
    /// a long chain of overlapping finds, or a cut moved back by a custom
    /// entity): `veil[k] == b'*'` hides `buf[context + k]` when it is released.
    veil: Vec<u8>,
    /// Scratch: a value masked whole, to split it at the cut.
    value: Vec<u8>,
    /// Scratch: the text the custom entities look at (the detectors' finds
    /// masked, as [`Masker::mask_value`] shows it to them), and their finds.
    work: Vec<u8>,
    found: Vec<(Range<usize>, &'static str)>,
    /// Inside a private key whose end has not arrived: mask until `-----END`.
    in_key: bool,
}

/// Detectors that read before the value they find (see `anchor_before`).
fn reads_before(d: Detector) -> bool {
    matches!(
        d,
        Detector::PrivateKey | Detector::AwsKey | Detector::Bearer
    )
}

/// A byte no value the detectors find starts with, at which every look back
/// stops (an email's local part, an IPv6 address): a left context that starts
/// on one reads as the whole stream does at every later byte, so no value is
/// found at its first byte that the whole text does not have (one that would
/// swallow a real value as lying inside it).
fn separator(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t'
            | b'\n'
            | b'\r'
            | b'"'
            | b'\''
            | b','
            | b';'
            | b'<'
            | b'>'
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'|'
            | b'\\'
            | b'='
            | b'!'
            | b'?'
            | b'*'
            | b'&'
    )
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
            veil: Vec::new(),
            value: Vec::new(),
            work: Vec::new(),
            found: Vec::new(),
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
        self.release(self.buf.len() - WINDOW, false, out);
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
            out.extend_from_slice(&self.buf[start..]);
        } else {
            self.release(self.buf.len(), true, out);
        }
        self.buf.clear();
        self.context = 0;
        self.veil.clear();
        self.in_key = false;
    }

    /// Where a find's detector starts reading, if that is before `cut`: a
    /// key's `-----BEGIN` line, the AWS key id before a secret key, the
    /// `Bearer ` before a token; the find's own start otherwise (the byte
    /// before it, its left boundary, is always in the context).
    #[inline]
    fn anchor_before(&self, h: &Hit, cut: usize) -> Option<usize> {
        let s = h.range.start;
        let a = match h.detector {
            Detector::PrivateKey => {
                // The last `-----BEGIN ` before the header's closing dashes
                // (see `private_key_at`).
                let head = &self.buf[..s.saturating_sub(5)];
                memchr::memmem::rfind(head, b"-----BEGIN ").unwrap_or(s)
            }
            Detector::AwsKey if h.range.len() != 20 => s.saturating_sub(AWS_SECRET_REACH),
            Detector::Bearer => s.saturating_sub(7),
            _ => s,
        };
        (a < cut).then_some(a)
    }

    /// Hides the gateway's secrets in place, before the detectors look (as
    /// [`Masker::mask_value`] does): every find that is final, i.e. starts at
    /// least the pattern's longest match before the end of what is held (no
    /// byte still to come can change it), or all of them at the end.
    fn secrets(&mut self, at_end: bool) {
        if self.masker.profile.entities.is_empty() {
            return;
        }
        let entities = self.masker.profile.entities.clone();
        for e in entities.iter().filter(|e| e.secret) {
            let last = match at_end {
                true => usize::MAX,
                false => self.buf.len().saturating_sub(e.max_len()),
            };
            self.masker.spans.clear();
            e.find(&self.buf, &mut self.masker.spans);
            for r in self.masker.spans.drain(..) {
                if r.start < self.context || r.start > last {
                    continue;
                }
                mask::apply(&mut self.buf, r, None, Style::Full);
                self.masker.counts.entity(e.name);
            }
        }
    }

    /// The custom entities' finds from the context on, looked for (as by
    /// [`Masker::mask_value`]) in the text with the detectors' finds masked;
    /// one straddling the cut moves it back (unless `fixed`).
    fn entities(&mut self, cut: &mut usize, fixed: bool) {
        self.found.clear();
        if !self.masker.profile.entities.iter().any(|e| !e.secret) {
            return;
        }
        self.work.clear();
        self.work.extend_from_slice(&self.buf);
        for (w, v) in self.work[self.context..].iter_mut().zip(&self.veil) {
            if *v == b'*' {
                *w = b'*';
            }
        }
        for h in &self.masker.hits {
            mask::apply(
                &mut self.work,
                h.range.clone(),
                Some(h.detector),
                Style::Redact,
            );
        }
        let entities = self.masker.profile.entities.clone();
        for e in entities.iter().filter(|e| !e.secret) {
            self.masker.spans.clear();
            e.find(&self.work, &mut self.masker.spans);
            for r in self.masker.spans.drain(..) {
                mask::apply(&mut self.work, r.clone(), None, Style::Redact);
                if r.start < self.context {
                    continue;
                }
                // Finds of one entity do not overlap: one pass settles it.
                if !fixed && r.start < *cut && r.end > *cut {
                    *cut = r.start;
                }
                self.found.push((r, e.name));
            }
        }
    }

    /// Decides what lies below `cut` (moved back to the start of any value
    /// that straddles it, unless `fixed`), masks it and releases it.
    fn release(&mut self, cut: usize, fixed: bool, out: &mut Vec<u8>) {
        let mut cut = cut;
        // Secrets first, hidden whole, before a detector masks part of one
        // (and so hides the rest from its pattern).
        self.secrets(cut == self.buf.len());
        detect::scan_on(
            self.masker.isa,
            &self.buf,
            &self.masker.profile.detectors,
            &mut self.masker.hits,
        );
        if !fixed {
            // A find whose detector reads bytes before the cut and that ends
            // after it waits, with those bytes, for the rest. Finds may
            // overlap: moving the cut back to one can make an earlier one
            // straddle it, so repeat until nothing straddles. A chain of
            // overlapping finds longer than half the window (no real value
            // is) stops at a floor: what straddles it is decided now.
            let floor = cut.saturating_sub(WINDOW / 2).max(self.context);
            loop {
                let before = cut;
                for h in &self.masker.hits {
                    if h.range.start < self.context
                        || h.range.end <= cut
                        || (h.range.start >= cut && !reads_before(h.detector))
                    {
                        continue;
                    }
                    if let Some(a) = self.anchor_before(h, cut) {
                        cut = match h.detector {
                            // A key waits for its END line (or is masked blind).
                            Detector::PrivateKey => a.max(self.context),
                            _ => cut.min(a.max(floor)),
                        };
                    }
                }
                if cut == before {
                    break;
                }
            }
        }
        // Custom entities, after the built-in detectors as for whole values.
        self.entities(&mut cut, fixed);
        // An unterminated key that no longer fits: release up to its body,
        // then mask it blind until its END line.
        if !fixed && cut <= self.context && self.buf.len() - self.context > MAX_HELD {
            let body = self
                .masker
                .hits
                .iter()
                .filter(|h| h.detector == Detector::PrivateKey && h.range.start >= self.context)
                .map(|h| h.range.start)
                .min();
            if let Some(body) = body {
                self.release(body, true, out);
            }
            self.in_key = true;
            self.continue_key(out);
            return;
        }
        self.emit(cut, out);
    }

    /// Releases `buf[context..cut]` with every value decided at this cut
    /// masked, and keeps a left context of released bytes as they arrived.
    fn emit(&mut self, cut: usize, out: &mut Vec<u8>) {
        let ctx = self.context;
        let base = out.len();
        out.extend_from_slice(&self.buf[ctx..cut]);
        // Values decided earlier that run into these bytes.
        let used = (cut - ctx).min(self.veil.len());
        if used > 0 {
            for (o, v) in out[base..].iter_mut().zip(&self.veil[..used]) {
                if *v == b'*' {
                    *o = b'*';
                }
            }
            self.veil.drain(..used);
        }
        // Now `veil[k]` is for `buf[cut + k]`. Finds come sorted by start and
        // are masked in that order, as by `mask_value`.
        for i in 0..self.masker.hits.len() {
            let h = &self.masker.hits[i];
            if h.range.start < ctx {
                continue;
            }
            let below = h.range.start < cut;
            // Past the cut, a find waits for the next scan, unless its
            // detector reads from before the cut (which that scan may not
            // see: the floor of a long chain): hidden ahead, then counted
            // when found again.
            if !below
                && (!reads_before(h.detector)
                    || h.detector == Detector::PrivateKey
                    || self.anchor_before(h, cut).is_none())
            {
                continue;
            }
            let (range, detector) = (h.range.clone(), h.detector);
            if range.end <= cut {
                let r = base + range.start - ctx..base + range.end - ctx;
                mask::apply(out, r, Some(detector), Style::Redact);
            } else {
                self.hide(range, Some(detector), Style::Redact, cut, base, out);
            }
            if below {
                self.masker.counts.by_detector[detector as usize] += 1;
            }
        }
        for i in 0..self.found.len() {
            let (range, name) = self.found[i].clone();
            if range.start >= cut {
                continue;
            }
            self.hide(range, None, Style::Redact, cut, base, out);
            self.masker.counts.entity(name);
        }
        // Keep a little released context, as it arrived, for the next scan,
        // from a separator if there is one.
        let min = match self.masker.profile.entities.is_empty() {
            true => 1,
            false => MIN_CONTEXT,
        };
        let lo = cut.saturating_sub(CONTEXT);
        let hi = cut.saturating_sub(min);
        let keep_from = match self.buf[lo..hi].iter().rposition(|&b| separator(b)) {
            Some(p) => lo + p,
            None => lo,
        };
        self.buf.drain(..keep_from);
        self.context = cut - keep_from;
    }

    /// Masks the value at `range` (`buf` positions) in the bytes released
    /// from `out[base..]` (`buf[context..cut]`); the part past the cut goes
    /// into the veil.
    fn hide(
        &mut self,
        range: Range<usize>,
        detector: Option<Detector>,
        style: Style,
        cut: usize,
        base: usize,
        out: &mut [u8],
    ) {
        let ctx = self.context;
        if range.end <= cut {
            let r = base + range.start - ctx..base + range.end - ctx;
            mask::apply(out, r, detector, style);
            return;
        }
        // Masked whole aside (its shape depends on all of it), then split.
        let from = range.start.max(cut);
        let head = from - range.start;
        self.value.clear();
        self.value
            .extend_from_slice(&out[base + range.start.min(cut) - ctx..base + cut - ctx]);
        self.value.extend_from_slice(&self.buf[from..range.end]);
        let tail = from - cut..range.end - cut;
        for (b, v) in self.value[head..]
            .iter_mut()
            .zip(self.veil.get(tail.start..).unwrap_or(&[]))
        {
            if *v == b'*' {
                *b = b'*';
            }
        }
        let n = self.value.len();
        mask::apply(&mut self.value, 0..n, detector, style);
        out[base + range.start.min(cut) - ctx..base + cut - ctx]
            .copy_from_slice(&self.value[..head]);
        if self.veil.len() < tail.end {
            self.veil.resize(tail.end, 0);
        }
        for (v, b) in self.veil[tail].iter_mut().zip(&self.value[head..]) {
            if *b == b'*' {
                *v = b'*';
            }
        }
    }

    /// Masks held bytes until the key's `-----END`, releasing them.
    fn continue_key(&mut self, out: &mut Vec<u8>) {
        let start = self.context;
        let held = &self.buf[start..];
        let end = memchr::memmem::find(held, b"-----END ").map(|p| start + p);
        // Without an END yet, its first bytes may be the last ones here.
        let stop = end.unwrap_or(self.buf.len().saturating_sub(END_TAIL).max(start));
        mask::apply(
            &mut self.buf,
            start..stop,
            Some(Detector::PrivateKey),
            Style::Full,
        );
        out.extend_from_slice(&self.buf[start..stop]);
        self.buf.drain(..stop);
        let used = (stop - start).min(self.veil.len());
        self.veil.drain(..used);
        self.context = 0;
        if end.is_some() {
            self.in_key = false;
            self.masker.counts.by_detector[Detector::PrivateKey as usize] += 1;
        }
    }
}
