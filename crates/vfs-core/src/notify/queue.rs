//! A bounded queue with backpressure, built from the `sync` facade so loom checks it.
//!
//! Invariant: an item is either refused to its sender (handed back, with the reason) or
//! delivered to the receiver, never silently dropped while the receiver lives; a sender
//! waiting for room (blocking or async) is woken by the next pop, so a full queue stalls
//! its producers instead of losing their items, and never deadlocks them.
//!
//! *Prevents:* seed 000 bug 3 (doc/LESSONS.md#seed-000-bug-3), second half: a bounded notify channel that dropped
//! notifications on overflow ("we raised it from 2048 to 16384", which only moves the
//! cliff). Here a full queue means the producer waits ([`Sender::send`],
//! [`Sender::send_blocking`]) or gets its item back ([`Sender::try_send`]).
//!
//! One receiver, any number of senders. Waiting senders are all woken on a pop and race
//! for the room; a woken sender that loses re-registers, so no wakeup is lost even when a
//! waiting future is dropped. Wakers are woken after the lock is released.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Why [`Sender::try_send`] refused an item; the item comes back.
#[derive(PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue is full; try later or use `send`, which waits.
    Full(T),
    /// The receiving side is gone.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The refused item.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Closed(v) => v,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("queue full"),
            TrySendError::Closed(_) => f.write_str("receiver closed"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// The receiving side is gone; the item comes back.
#[derive(PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receiver closed")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// What a non-blocking receive found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Received {
    /// This many items were appended to the output.
    Items(usize),
    /// Nothing now; senders remain.
    Empty,
    /// Nothing, and every sender is gone.
    Closed,
}

struct State<T> {
    buf: VecDeque<T>,
    cap: usize,
    senders: usize,
    receiver: bool,
    send_wakers: Vec<(u64, Waker)>,
    next_waker_id: u64,
    recv_waker: Option<Waker>,
    blocked_senders: usize,
    blocked_receiver: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    not_full: Condvar,
    not_empty: Condvar,
}

/// Wakeups to deliver once the lock is released.
#[derive(Default)]
struct Wakeups {
    wakers: Vec<Waker>,
    senders: bool,
    receiver: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock()
    }

    fn deliver(&self, w: Wakeups) {
        if w.senders {
            self.not_full.notify_all();
        }
        if w.receiver {
            self.not_empty.notify_one();
        }
        for waker in w.wakers {
            waker.wake();
        }
    }
}

impl<T> State<T> {
    /// After items were pushed or the senders went away: wake the receiver.
    fn wake_receiver(&mut self, w: &mut Wakeups) {
        w.wakers.extend(self.recv_waker.take());
        w.receiver = self.blocked_receiver;
    }

    /// After items were popped or the receiver went away: wake every waiting sender.
    fn wake_senders(&mut self, w: &mut Wakeups) {
        w.wakers.extend(self.send_wakers.drain(..).map(|(_, waker)| waker));
        w.senders = self.blocked_senders > 0;
    }

    fn pop_into(&mut self, out: &mut Vec<T>, max: usize, w: &mut Wakeups) -> usize {
        let n = self.buf.len().min(max.max(1));
        out.extend(self.buf.drain(..n));
        if n > 0 {
            self.wake_senders(w);
        }
        n
    }
}

/// Creates a queue holding at most `capacity` items (at least one).
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let cap = capacity.max(1);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buf: VecDeque::with_capacity(cap.min(1024)),
            cap,
            senders: 1,
            receiver: true,
            send_wakers: Vec::new(),
            next_waker_id: 0,
            recv_waker: None,
            blocked_senders: 0,
            blocked_receiver: false,
        }),
        not_full: Condvar::new(),
        not_empty: Condvar::new(),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

/// The sending side; clone it for more producers. When the last one is dropped the
/// receiver sees the queue close after draining it.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sender { .. }")
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Sender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut w = Wakeups::default();
        {
            let mut st = self.shared.lock();
            st.senders -= 1;
            if st.senders == 0 {
                st.wake_receiver(&mut w);
            }
        }
        self.shared.deliver(w);
    }
}

impl<T> Sender<T> {
    /// Queues `item` if there is room; otherwise hands it back.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut w = Wakeups::default();
        {
            let mut st = self.shared.lock();
            if !st.receiver {
                return Err(TrySendError::Closed(item));
            }
            if st.buf.len() >= st.cap {
                return Err(TrySendError::Full(item));
            }
            st.buf.push_back(item);
            st.wake_receiver(&mut w);
        }
        self.shared.deliver(w);
        Ok(())
    }

    /// Queues `item`, blocking the thread while the queue is full.
    pub fn send_blocking(&self, item: T) -> Result<(), SendError<T>> {
        let mut w = Wakeups::default();
        {
            let mut st = self.shared.lock();
            loop {
                if !st.receiver {
                    return Err(SendError(item));
                }
                if st.buf.len() < st.cap {
                    break;
                }
                st.blocked_senders += 1;
                st = self.shared.not_full.wait(st);
                st.blocked_senders -= 1;
            }
            st.buf.push_back(item);
            st.wake_receiver(&mut w);
        }
        self.shared.deliver(w);
        Ok(())
    }

    /// Queues `item`, waiting (async) while the queue is full. Dropping the future before
    /// it completes drops the item with it, unsent.
    pub fn send(&self, item: T) -> SendFuture<'_, T> {
        SendFuture {
            shared: &self.shared,
            item: Some(item),
            waker_id: None,
        }
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.shared.lock().buf.len()
    }

    /// No items queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Future of [`Sender::send`].
#[must_use = "futures do nothing unless polled"]
pub struct SendFuture<'a, T> {
    shared: &'a Shared<T>,
    item: Option<T>,
    waker_id: Option<u64>,
}

impl<T> fmt::Debug for SendFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendFuture { .. }")
    }
}

impl<T> Unpin for SendFuture<'_, T> {}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut w = Wakeups::default();
        let out = {
            let mut st = this.shared.lock();
            if let Some(id) = this.waker_id.take() {
                st.send_wakers.retain(|(i, _)| *i != id);
            }
            match this.item.take() {
                // Polled after completion: nothing left to send.
                None => Poll::Ready(Ok(())),
                Some(item) if !st.receiver => Poll::Ready(Err(SendError(item))),
                Some(item) if st.buf.len() < st.cap => {
                    st.buf.push_back(item);
                    st.wake_receiver(&mut w);
                    Poll::Ready(Ok(()))
                }
                Some(item) => {
                    this.item = Some(item);
                    let id = st.next_waker_id;
                    st.next_waker_id += 1;
                    st.send_wakers.push((id, cx.waker().clone()));
                    this.waker_id = Some(id);
                    Poll::Pending
                }
            }
        };
        this.shared.deliver(w);
        out
    }
}

impl<T> Drop for SendFuture<'_, T> {
    fn drop(&mut self) {
        if let Some(id) = self.waker_id.take() {
            let mut w = Wakeups::default();
            {
                let mut st = self.shared.lock();
                st.send_wakers.retain(|(i, _)| *i != id);
                // We may have been woken for room we will not use: pass it on.
                if st.buf.len() < st.cap && !st.send_wakers.is_empty() {
                    st.wake_senders(&mut w);
                }
            }
            self.shared.deliver(w);
        }
    }
}

/// The receiving side. Dropping it closes the queue: senders get their items back.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Receiver { .. }")
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut w = Wakeups::default();
        {
            let mut st = self.shared.lock();
            st.receiver = false;
            st.wake_senders(&mut w);
        }
        self.shared.deliver(w);
    }
}

impl<T> Receiver<T> {
    /// Moves up to `max` queued items (at least one) to `out`, without waiting.
    pub fn try_recv_many(&mut self, out: &mut Vec<T>, max: usize) -> Received {
        let mut w = Wakeups::default();
        let r = {
            let mut st = self.shared.lock();
            match st.pop_into(out, max, &mut w) {
                0 if st.senders == 0 => Received::Closed,
                0 => Received::Empty,
                n => Received::Items(n),
            }
        };
        self.shared.deliver(w);
        r
    }

    /// Moves up to `max` items to `out`, blocking until there is at least one, every
    /// sender is gone, or `timeout` (if any) passes.
    pub fn recv_many_blocking(&mut self, out: &mut Vec<T>, max: usize, timeout: Option<Duration>) -> Received {
        let mut w = Wakeups::default();
        let r = {
            let mut st = self.shared.lock();
            loop {
                match st.pop_into(out, max, &mut w) {
                    0 if st.senders == 0 => break Received::Closed,
                    0 => {}
                    n => break Received::Items(n),
                }
                st.blocked_receiver = true;
                let timed_out = match timeout {
                    Some(t) => {
                        let (g, timed_out) = self.shared.not_empty.wait_for(st, t);
                        st = g;
                        timed_out
                    }
                    None => {
                        st = self.shared.not_empty.wait(st);
                        false
                    }
                };
                st.blocked_receiver = false;
                if timed_out {
                    break match st.pop_into(out, max, &mut w) {
                        0 if st.senders == 0 => Received::Closed,
                        0 => Received::Empty,
                        n => Received::Items(n),
                    };
                }
            }
        };
        self.shared.deliver(w);
        r
    }

    /// Moves up to `max` items to `out`, waiting (async) until there is at least one or
    /// every sender is gone. Resolves to [`Received::Items`] or [`Received::Closed`].
    pub fn recv_many<'a>(&'a mut self, out: &'a mut Vec<T>, max: usize) -> RecvMany<'a, T> {
        RecvMany { rx: self, out, max }
    }

    /// One poll of [`Receiver::recv_many`].
    fn poll_recv_many(&mut self, out: &mut Vec<T>, max: usize, cx: &mut Context<'_>) -> Poll<Received> {
        let mut w = Wakeups::default();
        let r = {
            let mut st = self.shared.lock();
            match st.pop_into(out, max, &mut w) {
                0 if st.senders == 0 => Poll::Ready(Received::Closed),
                0 => {
                    match &mut st.recv_waker {
                        Some(old) if old.will_wake(cx.waker()) => {}
                        slot => *slot = Some(cx.waker().clone()),
                    }
                    Poll::Pending
                }
                n => Poll::Ready(Received::Items(n)),
            }
        };
        self.shared.deliver(w);
        r
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.shared.lock().buf.len()
    }

    /// No items queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Future of [`Receiver::recv_many`]. Cancel-safe: items are moved only when it resolves.
#[must_use = "futures do nothing unless polled"]
pub struct RecvMany<'a, T> {
    rx: &'a mut Receiver<T>,
    out: &'a mut Vec<T>,
    max: usize,
}

impl<T> fmt::Debug for RecvMany<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecvMany { .. }")
    }
}

impl<T> Future for RecvMany<'_, T> {
    type Output = Received;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Received> {
        let this = self.get_mut();
        this.rx.poll_recv_many(this.out, this.max, cx)
    }
}
