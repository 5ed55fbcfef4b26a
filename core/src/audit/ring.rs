//! A lock-free single-producer / single-consumer byte ring: the shard pushes
//! encoded records, the audit writer drains them. Pushing takes no lock and
//! allocates nothing: a record is copied into the ring as `len:u32 | bytes`.
//!
//! `head` is advanced only by the producer, `tail` only by the consumer; both are
//! monotonically increasing byte counts (positions wrap by masking). A record
//! never straddles the end: if it does not fit contiguously, a zero-length
//! marker sends the consumer back to the start.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Ring {
    buf: Box<[UnsafeCell<u8>]>,
    mask: u64,
    /// Bytes ever pushed (producer-owned).
    head: AtomicU64,
    /// Bytes ever consumed (consumer-owned).
    tail: AtomicU64,
    /// Pushed records the writer has made durable, as a `head` position.
    pub durable: AtomicU64,
}

// SAFETY: the producer writes only the free region [head, tail + cap) and the
// consumer reads only [tail, head); the Release/Acquire pairs on head and tail
// order those accesses, so no byte is ever accessed by both sides at once.
unsafe impl Sync for Ring {}
unsafe impl Send for Ring {}

const HDR: u64 = 4;

impl Ring {
    /// A ring of `capacity` bytes, rounded up to a power of two.
    pub fn new(capacity: usize) -> Ring {
        let cap = capacity.next_power_of_two().max(1024);
        Ring {
            buf: (0..cap).map(|_| UnsafeCell::new(0)).collect(),
            mask: cap as u64 - 1,
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            durable: AtomicU64::new(0),
        }
    }

    fn cap(&self) -> u64 {
        self.mask + 1
    }

    fn write_at(&self, pos: u64, bytes: &[u8]) {
        let start = (pos & self.mask) as usize;
        // SAFETY: caller guarantees [pos, pos + len) is free and contiguous.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.buf[start].get(), bytes.len());
        }
    }

    fn read_at(&self, pos: u64, out: &mut [u8]) {
        let start = (pos & self.mask) as usize;
        // SAFETY: [pos, pos + len) was published by the producer and not yet freed.
        unsafe {
            std::ptr::copy_nonoverlapping(self.buf[start].get(), out.as_mut_ptr(), out.len());
        }
    }

    /// Producer: appends one record. Returns the `head` position after it (a
    /// ticket to wait on for durability), or `None` if the ring is full.
    pub fn push(&self, record: &[u8]) -> Option<u64> {
        let need = HDR + record.len() as u64;
        if need + HDR > self.cap() / 2 {
            return None; // one record may not take more than half the ring
        }
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        let mut pos = head;
        let to_end = self.cap() - (head & self.mask);
        if to_end < need {
            // Not contiguous: mark the rest of the buffer skipped.
            if head + to_end + need - tail > self.cap() {
                return None;
            }
            if to_end >= HDR {
                self.write_at(pos, &0u32.to_le_bytes());
            }
            pos += to_end;
        }
        if pos + need - tail > self.cap() {
            return None;
        }
        self.write_at(pos, &(record.len() as u32).to_le_bytes());
        self.write_at(pos + HDR, record);
        let new_head = pos + need;
        self.head.store(new_head, Ordering::Release);
        Some(new_head)
    }

    /// Consumer: moves every pushed record into `out` (each followed by `\n`
    /// handling left to the caller via `each`). Returns the head consumed up to.
    pub fn drain(&self, mut each: impl FnMut(&[u8]), scratch: &mut Vec<u8>) -> u64 {
        let head = self.head.load(Ordering::Acquire);
        let mut tail = self.tail.load(Ordering::Relaxed);
        while tail < head {
            let to_end = self.cap() - (tail & self.mask);
            if to_end < HDR {
                tail += to_end;
                continue;
            }
            let mut len = [0u8; 4];
            self.read_at(tail, &mut len);
            let len = u32::from_le_bytes(len) as u64;
            if len == 0 {
                tail += to_end;
                continue;
            }
            scratch.clear();
            scratch.resize(len as usize, 0);
            self.read_at(tail + HDR, scratch);
            each(scratch);
            tail += HDR + len;
        }
        self.tail.store(tail, Ordering::Release);
        head
    }

    /// Bytes waiting to be drained.
    pub fn pending(&self) -> u64 {
        self.head.load(Ordering::Acquire) - self.tail.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn wraps_refuses_when_full_and_keeps_order_across_threads() {
        let ring = Arc::new(Ring::new(1024));
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        let mut pushed = 0u32;
        // Fill until refused.
        while ring.push(&pushed.to_le_bytes().repeat(10)).is_some() {
            pushed += 1;
        }
        assert!(pushed > 5);
        ring.drain(
            |r| got.push(u32::from_le_bytes(r[..4].try_into().unwrap())),
            &mut scratch,
        );
        assert_eq!(got, (0..pushed).collect::<Vec<_>>());

        // A producer and a consumer thread, many wraps.
        let producer = {
            let ring = ring.clone();
            std::thread::spawn(move || {
                for i in 0..100_000u32 {
                    let rec = format!("record-{i}-{}", "x".repeat((i % 37) as usize));
                    while ring.push(rec.as_bytes()).is_none() {
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let mut next = 0u32;
        while next < 100_000 {
            ring.drain(
                |r| {
                    let want = format!("record-{next}-{}", "x".repeat((next % 37) as usize));
                    assert_eq!(r, want.as_bytes());
                    next += 1;
                },
                &mut scratch,
            );
        }
        producer.join().unwrap();
        assert_eq!(ring.pending(), 0);
    }
}
