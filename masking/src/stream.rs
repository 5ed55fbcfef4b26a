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
//! JWTs, bearer tokens and API tokens have no length limit: a token run that
//! the buffer ends in, and that a detector may still find once more bytes
//! arrive (`eyJ` and base64url before its dots, `Bearer ` and token bytes, a
//! known prefix and token bytes), holds the release point at its start until
//! it ends. One longer than [`MAX_HELD`] is masked blind from its start to the
//! first byte that cannot continue it, across chunks (fail closed).
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

use crate::detect::{self, Detector, Hit, API_PREFIXES};
use crate::mask::{self, Style};
use crate::{Isa, Masker, Profile};

/// Bytes held back: longer than any value the detectors find but private keys
/// and tokens, which are held from their start (see `open_token`) until they
/// end or outgrow [`MAX_HELD`].
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
/// Largest buffered private key or token before it is masked blind.
pub const MAX_HELD: usize = 64 * 1024;
/// An AWS secret key is looked for within 200 bytes after its 20-byte key id,
/// whose left boundary is one byte before it.
const AWS_SECRET_REACH: usize = 200 + 20 + 1;
/// Most bytes masked blind as one unterminated private key (a real one is a
/// few KiB at the most).
pub const MAX_KEY_MASKED: usize = 64 * 1024;
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
    /// The key was taken up at a pause ([`StreamMasker::flush`]), from its
    /// header alone: past [`MAX_KEY_MASKED`] bytes without its END it is
    /// given up (a header line printed on its own, not a key: masking the
    /// rest of an interactive session blind would hide everything after it).
    key_from_pause: bool,
    key_masked: usize,
    /// Inside a token too long to hold: mask until a byte that cannot
    /// continue it.
    blind: Option<Run>,
    /// The release point is held at the start of a token run, which the held
    /// bytes (from `context`) are, up to `held_to` (read so far) or to
    /// `hold_end` (the first byte that cannot continue it, once arrived).
    /// While it goes on nothing more can be released; once it has ended, the
    /// next release waits for a window's bytes after it, so it releases the
    /// token whole instead of reading it once more.
    hold: Option<Run>,
    held_to: usize,
    hold_end: Option<usize>,
    /// The token detectors in the profile.
    tokens: Tokens,
}

/// Which token detectors are on (they decide what a token run may be).
#[derive(Clone, Copy)]
struct Tokens {
    jwt: bool,
    bearer: bool,
    api_key: bool,
}

/// The bytes that continue a token: a bearer token's, a JWT's (its base64url
/// parts and their dots) or an API token's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    Bearer,
    Jwt,
    ApiKey,
}

/// Bit `1 << run` of `RUN_BYTES[b]` is set if `b` continues that run. An API
/// token's bytes are all a JWT's, and a JWT's all a bearer token's.
static RUN_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let alnum = b.is_ascii_alphanumeric();
        if alnum || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=') {
            t[c] |= 1 << Run::Bearer as u8;
        }
        if alnum || matches!(b, b'-' | b'_' | b'=' | b'.') {
            t[c] |= 1 << Run::Jwt as u8;
        }
        if alnum || matches!(b, b'-' | b'_') {
            t[c] |= 1 << Run::ApiKey as u8;
        }
        c += 1;
    }
    t
};

impl Run {
    #[inline]
    fn continues(self, b: u8) -> bool {
        RUN_BYTES[b as usize] & (1 << self as u8) != 0
    }

    fn detector(self) -> Detector {
        match self {
            Run::Bearer => Detector::Bearer,
            Run::Jwt => Detector::Jwt,
            Run::ApiKey => Detector::ApiKey,
        }
    }
}

/// A token run the buffer ends in, in which a detector may still find a
/// value: the detector reads from `anchor` (`Bearer `, or the value itself),
/// the value starts at `start`, `run` is what continues it (a JWT's bytes if
/// one may start in it, as they take in an API token's).
#[derive(Clone, Copy, Debug)]
struct Open {
    anchor: usize,
    start: usize,
    run: Run,
    detector: Detector,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Where the run of `run` bytes that `buf[..t]` ends in starts.
#[inline]
fn run_start(buf: &[u8], mut t: usize, run: Run) -> usize {
    while t > 0 && run.continues(buf[t - 1]) {
        t -= 1;
    }
    t
}

/// Can `buf[i..]`, all JWT bytes (base64url and dots), still become a JWT
/// from `i` (as `secrets::jwt_at` reads one: a header of ten or more bytes, a
/// dot, a payload starting `eyJ`, a dot, a signature) once more bytes arrive?
fn jwt_open(buf: &[u8], i: usize) -> bool {
    let n = buf.len();
    let dot = |from: usize| memchr::memchr(b'.', &buf[from..]).map_or(n, |p| from + p);
    let h = dot(i);
    if h == n {
        return true;
    }
    if h - i < 10 {
        return false;
    }
    let q = h + 1;
    let have = (n - q).min(3);
    if buf[q..q + have] != b"eyJ"[..have] {
        return false;
    }
    let p = dot(q);
    // The signature (after the second dot) runs to the end.
    p == n || dot(p + 1) == n
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
        let on = |d| profile.detectors.contains(&d);
        let tokens = Tokens {
            jwt: on(Detector::Jwt),
            bearer: on(Detector::Bearer),
            api_key: on(Detector::ApiKey),
        };
        StreamMasker {
            masker: Masker::with_isa(profile, isa),
            buf: Vec::with_capacity(2 * WINDOW),
            context: 0,
            veil: Vec::new(),
            value: Vec::new(),
            work: Vec::new(),
            found: Vec::new(),
            in_key: false,
            key_from_pause: false,
            key_masked: 0,
            blind: None,
            hold: None,
            held_to: 0,
            hold_end: None,
            tokens,
        }
    }

    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// Bytes held right now (bounded by the window, the left context and one
    /// chunk, or by [`MAX_HELD`] and one chunk while a key or token is held).
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next chunk; appends the bytes that are final (masked) to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.buf.extend_from_slice(chunk);
        if self.in_key {
            self.continue_key(out);
        }
        if self.blind.is_some() {
            self.continue_token(out);
            if self.blind.is_some() {
                return;
            }
        }
        let held = self.buf.len() - self.context;
        if held <= WINDOW {
            return;
        }
        // Held at the start of a token run: while the new bytes continue it
        // nothing more is final, and once it ends, releasing after a window's
        // bytes more lets one release take the whole token (either way, the
        // held bytes need no second look).
        if let Some(run) = self.hold {
            if self.hold_end.is_none() {
                let new = &self.buf[self.held_to..];
                self.hold_end = new
                    .iter()
                    .position(|&b| !run.continues(b))
                    .map(|p| self.held_to + p);
                self.held_to = self.buf.len();
            }
            let after = self.hold_end.map_or(0, |e| self.buf.len() - e);
            if held <= MAX_HELD && after < WINDOW {
                return;
            }
        }
        self.release(self.buf.len() - WINDOW, false, out);
    }

    /// Bytes waiting to be released (what [`StreamMasker::flush`] would
    /// release now), not counting the left context kept from earlier.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.context
    }

    /// The stream paused (an interactive terminal waits for the next key):
    /// releases everything held, masked as far as can be decided now,
    /// without forgetting what it is in the middle of. A token run the held
    /// bytes end in is masked from its start and, like a private key whose
    /// END has not arrived, goes on being masked in the bytes that follow
    /// until it ends: what a pause splits is masked, never shown in parts.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if self.blind.is_some() {
            self.continue_token(out);
            if self.blind.is_some() {
                return;
            }
        }
        if self.in_key {
            // Everything held, END_TAIL included: a split END line is then
            // not seen, and the key goes on being masked (fail closed).
            self.release_as_key(out);
            return;
        }
        if self.pending() == 0 {
            return;
        }
        if let Some(o) = self.open_token(self.buf.len()) {
            self.release(o.start.max(self.context), true, out);
            self.blind = Some(o.run);
            self.masker.counts.by_detector[o.detector as usize] += 1;
            self.continue_token(out);
            return;
        }
        // A private key begun and not ended: masked from here to its END.
        // As the detector reads one: `-----BEGIN ...PRIVATE KEY-----`, no END.
        let held = &self.buf[self.context..];
        let key = memchr::memmem::rfind(held, b"-----BEGIN ")
            .filter(|&b| memchr::memmem::find(&held[b..], b"-----END ").is_none())
            .filter(|&b| {
                let rest = &held[b + 11..];
                memchr::memmem::find(rest, b"-----")
                    .is_some_and(|e| memchr::memmem::find(&rest[..e], b"PRIVATE KEY").is_some())
            })
            .map(|b| self.context + b);
        if let Some(begin) = key {
            self.release(begin, true, out);
            self.enter_key(true);
            self.release_as_key(out);
            return;
        }
        let n = self.buf.len();
        self.release(n, true, out);
    }

    /// From here on the stream is inside a private key (masked to its END);
    /// `from_pause`: taken up at a pause from its header alone.
    fn enter_key(&mut self, from_pause: bool) {
        self.in_key = true;
        self.key_from_pause = from_pause;
        self.key_masked = 0;
    }

    /// Releases everything held masked as a private key's body (the key goes
    /// on: `in_key` stays as it is).
    fn release_as_key(&mut self, out: &mut Vec<u8>) {
        let (start, n) = (self.context, self.buf.len());
        mask::apply(
            &mut self.buf,
            start..n,
            Some(Detector::PrivateKey),
            Style::Full,
        );
        out.extend_from_slice(&self.buf[start..]);
        self.buf.clear();
        self.veil.clear();
        self.context = 0;
        self.key_masked += n - start;
        if self.key_from_pause && self.key_masked > MAX_KEY_MASKED {
            self.in_key = false;
        }
    }

    /// The stream ended: masks and releases everything held.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.blind.is_some() {
            self.continue_token(out);
        }
        if self.in_key {
            self.release_as_key(out);
        } else {
            self.release(self.buf.len(), true, out);
        }
        self.buf.clear();
        self.context = 0;
        self.veil.clear();
        self.in_key = false;
        self.blind = None;
        self.hold = None;
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

    /// The token run the buffer ends in, if a detector may still find a value
    /// in it once more bytes arrive (it has no length limit) and reads it from
    /// before `cut`: a `Bearer ` and token bytes, a JWT's `eyJ` at a word
    /// boundary and base64url with at most its two dots, or a known API token
    /// prefix at a word boundary and token bytes. The earliest such anchor.
    fn open_token(&self, cut: usize) -> Option<Open> {
        let on = self.tokens;
        if !(on.jwt || on.bearer || on.api_key) {
            return None;
        }
        let buf = &self.buf;
        let n = buf.len();
        // The run of bearer token bytes the buffer ends in takes in the JWT
        // and API token runs (bytes of fewer kinds); most start a few bytes
        // before its end.
        let tb = run_start(buf, n, Run::Bearer);
        if tb >= cut + 7 {
            return None;
        }
        if on.bearer && tb >= 7 && matches!(&buf[tb - 7..tb], b"Bearer " | b"bearer ") {
            return Some(Open {
                anchor: tb - 7,
                start: tb,
                run: Run::Bearer,
                detector: Detector::Bearer,
            });
        }
        let boundary = |k: usize| k == 0 || !is_word(buf[k - 1]);
        let ta = run_start(buf, n, Run::ApiKey);
        let tj = run_start(buf, ta, Run::Jwt);
        let mut open = None;
        if on.jwt {
            let mut k = tj.max(self.context);
            let hi = (cut + 2).min(n);
            while k < cut {
                let Some(p) = memchr::memmem::find(&buf[k..hi], b"eyJ") else {
                    break;
                };
                k += p;
                if boundary(k) && jwt_open(buf, k) {
                    open = Some(Open {
                        anchor: k,
                        start: k,
                        run: Run::Jwt,
                        detector: Detector::Jwt,
                    });
                    break;
                }
                k += 1;
            }
        }
        if on.api_key {
            // A token starts at the run's start or after a dash in it (its
            // other bytes are word bytes).
            let hi = open.map_or(cut, |o| o.anchor);
            let mut k = ta.max(self.context);
            while k < hi {
                if boundary(k) && API_PREFIXES.iter().any(|p| buf[k..].starts_with(p)) {
                    // A JWT may start later in the run: mask what continues it.
                    let run = open.map_or(Run::ApiKey, |o| o.run);
                    return Some(Open {
                        anchor: k,
                        start: k,
                        run,
                        detector: Detector::ApiKey,
                    });
                }
                match memchr::memchr(b'-', &buf[k..hi]) {
                    Some(p) => k += p + 1,
                    None => break,
                }
            }
        }
        open
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
        self.hold = None;
        let mut cut = cut;
        let mut open = None;
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
            // A token the buffer ends in, which may go on, waits from where
            // its detector reads (however long it is: no floor).
            open = self.open_token(cut);
            if let Some(o) = open {
                cut = o.anchor.max(self.context);
            }
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
        // The token holds the cut (nothing before it does).
        let open = open.filter(|o| cut == o.anchor.max(self.context));
        // A token that no longer fits: release up to it, then mask it blind
        // to its end.
        if let Some(o) = open.filter(|_| self.buf.len() - cut > MAX_HELD) {
            self.release(o.start.max(cut), true, out);
            self.blind = Some(o.run);
            self.masker.counts.by_detector[o.detector as usize] += 1;
            self.continue_token(out);
            return;
        }
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
            self.enter_key(false);
            self.continue_key(out);
            return;
        }
        self.emit(cut, out);
        if let Some(o) = open {
            self.hold = Some(o.run);
            self.held_to = self.buf.len();
            self.hold_end = None;
        }
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
        self.keep_context(cut);
    }

    /// Keeps a little released context below `cut`, as it arrived, for the
    /// next scan, from a separator if there is one.
    fn keep_context(&mut self, cut: usize) {
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

    /// Masks held bytes while they continue the token masked blind, releasing
    /// them; the first byte that cannot ends it.
    fn continue_token(&mut self, out: &mut Vec<u8>) {
        let Some(run) = self.blind else {
            return;
        };
        let start = self.context;
        let end = self.buf[start..]
            .iter()
            .position(|&b| !run.continues(b))
            .map(|p| start + p);
        let stop = end.unwrap_or(self.buf.len());
        let base = out.len();
        out.extend_from_slice(&self.buf[start..stop]);
        let used = (stop - start).min(self.veil.len());
        for (o, v) in out[base..].iter_mut().zip(&self.veil[..used]) {
            if *v == b'*' {
                *o = b'*';
            }
        }
        self.veil.drain(..used);
        let n = out.len();
        mask::apply(out, base..n, Some(run.detector()), Style::Redact);
        self.keep_context(stop);
        if end.is_some() {
            self.blind = None;
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
        self.key_masked += stop - start;
        if end.is_some() {
            self.in_key = false;
            self.masker.counts.by_detector[Detector::PrivateKey as usize] += 1;
        } else if self.key_from_pause && self.key_masked > MAX_KEY_MASKED {
            self.in_key = false;
        }
    }
}
