//! Single-thread wake-ups for a shard: [`Notify`] wakes every current waiter,
//! [`Latch`] is a one-way flag (e.g. "this shard is stopping") tasks can await.
//!
//! Waiters register a slot on first poll, update it on later polls and clear it on
//! drop, so a waiter re-polled inside a `select!` loop never grows the list.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    /// Registered waiters; each slot is tagged so a finished waiter can never
    /// clear a slot another waiter has since taken over.
    slots: RefCell<Vec<Option<(u64, Waker)>>>,
    next_tag: Cell<u64>,
}

impl Notify {
    /// Wakes every waiter created before this call.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        // One waker at a time, no borrow held while waking, nothing allocated:
        // this runs on every write to a client.
        let n = self.slots.borrow().len();
        for i in 0..n {
            let slot = self.slots.borrow_mut().get_mut(i).and_then(Option::take);
            if let Some((_, w)) = slot {
                w.wake();
            }
        }
    }

    /// Completes at the next [`notify_all`](Self::notify_all).
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: self.generation.get(),
            slot: None,
        }
    }
}

pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
    /// The slot index and the tag written there.
    slot: Option<(usize, u64)>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut slots = self.notify.slots.borrow_mut();
        let waker = cx.waker().clone();
        match self.slot {
            Some((i, tag)) if matches!(slots.get(i), Some(Some((t, _))) if *t == tag) => {
                slots[i] = Some((tag, waker));
            }
            _ => {
                let tag = self.notify.next_tag.get();
                self.notify.next_tag.set(tag + 1);
                let i = match slots.iter().position(Option::is_none) {
                    Some(i) => {
                        slots[i] = Some((tag, waker));
                        i
                    }
                    None => {
                        slots.push(Some((tag, waker)));
                        slots.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some((i, tag));
            }
        }
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        if let Some((i, tag)) = self.slot {
            if let Some(slot) = self.notify.slots.borrow_mut().get_mut(i) {
                if matches!(slot, Some((t, _)) if *t == tag) {
                    *slot = None;
                }
            }
        }
    }
}

/// A flag that is set once and can be awaited.
#[derive(Default)]
pub struct Latch {
    set: Cell<bool>,
    notify: Notify,
}

impl Latch {
    pub fn set(&self) {
        if !self.set.replace(true) {
            self.notify.notify_all();
        }
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    pub async fn wait(&self) {
        while !self.set.get() {
            self.notify.notified().await;
        }
    }
}

/// A value that one task at a time may take out and use across `.await`s, then put
/// back; others wait. This is how two pumps of a session share the client's write
/// half without holding a `RefCell` borrow across an await.
pub struct Slot<T> {
    value: std::cell::RefCell<Option<T>>,
    returned: Notify,
    closed: Cell<bool>,
}

impl<T> Slot<T> {
    pub fn new(value: T) -> Self {
        Slot {
            value: std::cell::RefCell::new(Some(value)),
            returned: Notify::default(),
            closed: Cell::new(false),
        }
    }

    /// Waits until the value is free and takes it; `None` if it was closed.
    pub async fn take(&self) -> Option<T> {
        loop {
            let notified = self.returned.notified();
            if let Some(v) = self.value.borrow_mut().take() {
                return Some(v);
            }
            if self.closed.get() {
                return None;
            }
            notified.await;
        }
    }

    pub fn put(&self, value: T) {
        *self.value.borrow_mut() = Some(value);
        self.returned.notify_all();
    }

    /// Takes the value for good (e.g. to close it); waiters get `None`.
    pub async fn close(&self) -> Option<T> {
        let v = self.take().await;
        self.closed.set(true);
        self.returned.notify_all();
        v
    }
}

/// Which of two futures finished first.
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Runs two futures until one finishes (the other is dropped); `a` is polled
/// first. Works in any runtime.
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn latch_wakes_waiters_and_stays_set() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let latch = Rc::new(Latch::default());
            let l2 = latch.clone();
            let waiter = monoio::spawn(async move { l2.wait().await });
            monoio::time::sleep(std::time::Duration::from_millis(5)).await;
            latch.set();
            waiter.await;
            latch.wait().await; // already set: immediate
            assert!(latch.is_set());
        });
    }

    #[test]
    fn a_finished_waiter_never_clears_another_waiters_slot() {
        let n = Notify::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut a = Box::pin(n.notified());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        n.notify_all(); // frees a's slot
        let mut b = Box::pin(n.notified());
        assert!(b.as_mut().poll(&mut cx).is_pending()); // b reuses the slot
        assert!(a.as_mut().poll(&mut cx).is_ready());
        drop(a); // must not clear b's registration
        assert!(
            n.slots.borrow().iter().any(Option::is_some),
            "b is still registered"
        );
        n.notify_all();
        assert!(b.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn dropped_waiters_free_their_slot() {
        let n = Notify::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..100 {
            let mut f = Box::pin(n.notified());
            assert!(f.as_mut().poll(&mut cx).is_pending());
            assert!(f.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(n.slots.borrow().len(), 1);
    }
}
