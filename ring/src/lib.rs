//! A lock-free single-producer / single-consumer byte ring: a shard pushes
//! encoded audit records, the audit writer drains them. Pushing takes no lock
//! and allocates nothing: a record is copied into the ring as `len:u32 | bytes`.
//!
//! [`channel`] returns the two halves. Each is `Send` (it may move to the
//! thread that uses it) but not `Sync`, and pushing or draining takes
//! `&mut self`: one producer and one consumer, by type, not by convention.
//!
//! `head` is advanced only by the producer, `tail` only by the consumer; both
//! are monotonically increasing byte counts (positions wrap by masking). A
//! record never straddles the end: if it does not fit contiguously, a
//! zero-length marker (or too little room for one) sends the consumer back to
//! the start. The indices sit on cache lines of their own, and the producer
//! caches the consumer's index, reloading it only when the ring looks full.
//!
//! ```
//! let (mut tx, mut rx) = sluice_ring::channel(1024);
//! let ticket = tx.push(b"hello").unwrap();
//! let mut got = Vec::new();
//! let mut scratch = Vec::new();
//! assert_eq!(rx.drain(|r| got.push(r.to_vec()), &mut scratch), ticket);
//! assert_eq!(got, [b"hello".to_vec()]);
//! rx.set_durable(ticket);
//! assert_eq!(tx.durable(), ticket);
//! ```

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes of a record's length prefix.
const HDR: u64 = 4;

/// Keeps a value on a cache line of its own (two 64-byte lines: adjacent-line
/// prefetch pulls pairs in), so producer and consumer do not share one.
#[repr(align(128))]
struct Padded<T>(T);

struct Inner {
    buf: Box<[UnsafeCell<u8>]>,
    mask: u64,
    /// Bytes ever pushed (written by the producer).
    head: Padded<AtomicU64>,
    /// Bytes ever consumed (written by the consumer).
    tail: Padded<AtomicU64>,
    /// Pushed records made durable, as a `head` position (written by the
    /// consumer's owner, read by the producer's).
    durable: Padded<AtomicU64>,
}

// SAFETY: the producer writes only the free region [head, tail + cap) and the
// consumer reads only [tail, head); the Release/Acquire pairs on head and tail
// order those accesses, so no byte is accessed by both sides at once. Only
// one `Producer` and one `Consumer` exist per ring, and neither is `Sync`.
unsafe impl Sync for Inner {}
unsafe impl Send for Inner {}

impl Inner {
    fn cap(&self) -> u64 {
        self.mask + 1
    }

    /// The ring's bytes as one raw pointer: derived from the whole slice
    /// (`UnsafeCell::raw_get` on its base), so offsets into any cell are
    /// within its provenance.
    fn base(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.buf.as_ptr())
    }

    /// # Safety
    /// `[pos, pos + bytes.len())` must be free (owned by the producer) and
    /// contiguous (not wrap).
    unsafe fn write_at(&self, pos: u64, bytes: &[u8]) {
        let start = (pos & self.mask) as usize;
        debug_assert!(start + bytes.len() <= self.buf.len());
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base().add(start), bytes.len());
    }

    /// # Safety
    /// `[pos, pos + out.len())` must be published (owned by the consumer)
    /// and contiguous.
    unsafe fn read_at(&self, pos: u64, out: &mut [u8]) {
        let start = (pos & self.mask) as usize;
        debug_assert!(start + out.len() <= self.buf.len());
        std::ptr::copy_nonoverlapping(self.base().add(start), out.as_mut_ptr(), out.len());
    }
}

/// A ring of `capacity` bytes (rounded up to a power of two, at least 1 KiB,
/// at most 1 GiB: a record's length prefix is 32 bits).
pub fn channel(capacity: usize) -> (Producer, Consumer) {
    let cap = capacity.clamp(1024, 1 << 30).next_power_of_two();
    let inner = Arc::new(Inner {
        buf: (0..cap).map(|_| UnsafeCell::new(0)).collect(),
        mask: cap as u64 - 1,
        head: Padded(AtomicU64::new(0)),
        tail: Padded(AtomicU64::new(0)),
        durable: Padded(AtomicU64::new(0)),
    });
    (
        Producer {
            inner: inner.clone(),
            head: 0,
            tail: 0,
            _not_sync: PhantomData,
        },
        Consumer {
            inner,
            _not_sync: PhantomData,
        },
    )
}

/// The pushing half (a shard's).
pub struct Producer {
    inner: Arc<Inner>,
    /// Our own `head` (only we write it).
    head: u64,
    /// The consumer's `tail` when last read.
    tail: u64,
    _not_sync: PhantomData<Cell<()>>,
}

impl Producer {
    /// Appends one record. Returns the `head` position after it (a ticket to
    /// wait on for durability), or `None` if the ring is full, the record is
    /// larger than half of it, or empty (a zero length marks a skip).
    pub fn push(&mut self, record: &[u8]) -> Option<u64> {
        let inner = &*self.inner;
        let cap = inner.cap();
        let need = HDR + record.len() as u64;
        if record.is_empty() || need + HDR > cap / 2 {
            return None;
        }
        let head = self.head;
        let to_end = cap - (head & inner.mask);
        // Where the record goes: here, or at the start after a skip marker.
        let pos = if to_end < need { head + to_end } else { head };
        if pos + need - self.tail > cap {
            self.tail = inner.tail.0.load(Ordering::Acquire);
            if pos + need - self.tail > cap {
                return None;
            }
        }
        // SAFETY: [head, pos + need) is within [tail, tail + cap), which the
        // consumer has released (Acquire on `tail` above or earlier), and each
        // write is contiguous: the marker fits before the end, the record
        // starts at `pos` with `need` bytes to the end or more.
        unsafe {
            if pos != head && to_end >= HDR {
                inner.write_at(head, &0u32.to_le_bytes());
            }
            inner.write_at(pos, &(record.len() as u32).to_le_bytes());
            inner.write_at(pos + HDR, record);
        }
        self.head = pos + need;
        inner.head.0.store(self.head, Ordering::Release);
        Some(self.head)
    }

    /// How far this ring's records are durable (a `head` position).
    pub fn durable(&self) -> u64 {
        self.inner.durable.0.load(Ordering::Acquire)
    }
}

/// The draining half (the audit writer's).
pub struct Consumer {
    inner: Arc<Inner>,
    _not_sync: PhantomData<Cell<()>>,
}

impl Consumer {
    /// Hands every pushed record to `each`, in order (copied into `scratch`
    /// first, so the ring space is free again at once). Returns the `head`
    /// position consumed up to.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8]), scratch: &mut Vec<u8>) -> u64 {
        let inner = &*self.inner;
        let head = inner.head.0.load(Ordering::Acquire);
        let mut tail = inner.tail.0.load(Ordering::Relaxed);
        while tail < head {
            let to_end = inner.cap() - (tail & inner.mask);
            if to_end < HDR {
                tail += to_end;
                continue;
            }
            let mut len = [0u8; 4];
            // SAFETY: [tail, head) was published by the Acquire load of
            // `head`; the length prefix is contiguous (`to_end >= HDR`).
            unsafe { inner.read_at(tail, &mut len) };
            let len = u32::from_le_bytes(len) as u64;
            if len == 0 {
                tail += to_end;
                continue;
            }
            scratch.clear();
            scratch.resize(len as usize, 0);
            // SAFETY: as above; a record never straddles the end.
            unsafe { inner.read_at(tail + HDR, scratch) };
            each(scratch);
            tail += HDR + len;
            // Free the space record by record: a producer waiting on a full
            // ring need not wait for the whole drain.
            inner.tail.0.store(tail, Ordering::Release);
        }
        head
    }

    /// Bytes waiting to be drained.
    pub fn pending(&self) -> u64 {
        self.inner.head.0.load(Ordering::Acquire) - self.inner.tail.0.load(Ordering::Relaxed)
    }

    /// Records up to `head` position `pos` are durable (only moves forward).
    pub fn set_durable(&self, pos: u64) {
        self.inner.durable.0.fetch_max(pos, Ordering::Release);
    }

    /// How far durability has been published.
    pub fn durable(&self) -> u64 {
        self.inner.durable.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fewer rounds under Miri, which interprets every access.
    const RECORDS: u32 = if cfg!(miri) { 600 } else { 100_000 };

    #[test]
    fn wraps_refuses_when_full_and_keeps_order_across_threads() {
        let (mut tx, mut rx) = channel(1024);
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        let mut pushed = 0u32;
        while tx.push(&pushed.to_le_bytes().repeat(10)).is_some() {
            pushed += 1;
        }
        assert!(pushed > 5);
        rx.drain(
            |r| got.push(u32::from_le_bytes(r[..4].try_into().unwrap())),
            &mut scratch,
        );
        assert_eq!(got, (0..pushed).collect::<Vec<_>>());
        assert_eq!(rx.pending(), 0);

        // A producer and a consumer thread, many wraps, every record length
        // from 0 (a zero-length record is a marker's twin: never pushed
        // empty here) to one that leaves less than a header before the end.
        let producer = std::thread::spawn(move || {
            for i in 0..RECORDS {
                let rec = format!("record-{i}-{}", "x".repeat((i % 37) as usize));
                while tx.push(rec.as_bytes()).is_none() {
                    std::thread::yield_now();
                }
            }
            tx
        });
        let mut next = 0u32;
        while next < RECORDS {
            let upto = rx.drain(
                |r| {
                    let want = format!("record-{next}-{}", "x".repeat((next % 37) as usize));
                    assert_eq!(r, want.as_bytes());
                    next += 1;
                },
                &mut scratch,
            );
            rx.set_durable(upto);
            std::thread::yield_now();
        }
        let tx = producer.join().unwrap();
        assert_eq!(rx.pending(), 0);
        assert_eq!(tx.durable(), rx.durable());
    }

    #[test]
    fn records_longer_than_half_the_ring_or_empty_are_refused() {
        let (mut tx, _rx) = channel(1024);
        assert!(tx.push(&[1; 500]).is_some());
        assert!(tx.push(&[1; 600]).is_none());
        assert!(tx.push(&[]).is_none());
    }

    #[test]
    fn a_record_that_leaves_less_than_a_header_before_the_end_skips_to_the_start() {
        let (mut tx, mut rx) = channel(1024);
        let mut scratch = Vec::new();
        let mut got = Vec::new();
        // 1022 bytes used (records of 500, 500 and 10, each after a 4-byte
        // prefix): 2 left before the end, less than a length prefix.
        for len in [500, 500, 10] {
            tx.push(&vec![7; len]).unwrap();
        }
        rx.drain(|r| got.push(r.len()), &mut scratch);
        tx.push(&[9; 100]).unwrap();
        rx.drain(|r| got.push(r.len()), &mut scratch);
        assert_eq!(got, [500, 500, 10, 100]);
        assert_eq!(rx.pending(), 0);
    }

    #[test]
    fn the_halves_move_between_threads_but_are_not_shared() {
        fn send<T: Send>() {}
        send::<Producer>();
        send::<Consumer>();
        // `Producer: !Sync` and `Consumer: !Sync` are checked by the
        // compile-fail examples below.
    }
}

/// ```compile_fail
/// fn sync<T: Sync>() {}
/// sync::<sluice_ring::Producer>();
/// ```
///
/// ```compile_fail
/// fn sync<T: Sync>() {}
/// sync::<sluice_ring::Consumer>();
/// ```
#[cfg(doctest)]
pub struct NotSync;
