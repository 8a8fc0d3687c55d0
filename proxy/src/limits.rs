//! Process-wide limits that keep one client from taking what the others
//! need: a budget for the bytes the proxy holds whole (large messages and
//! the SQL texts copied out of them), and slots for connections that have
//! not finished startup.
//!
//! Both are plain data structures with no I/O: the relay, the tracker and
//! the listener consult them, and unit tests drive them directly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Messages and SQL texts up to this size are never charged to the
/// budget: they fit a connection's ordinary read buffer, which is bounded
/// per connection anyway. Only what needs memory beyond it is charged.
pub const UNCHARGED_BYTES: usize = 16 * 1024;

/// The budget for bytes held whole, shared by every session.
///
/// A relay direction that must hold a large message whole (to let the
/// tracker read it) reserves its size here first, and so does the tracker
/// for its copy of a large SQL text. What cannot be reserved is not held:
/// the message streams through untouched and only its analysis is skipped
/// (see `relay.rs`), so the budget never refuses a client anything.
#[derive(Debug)]
pub struct HeldBudget {
    limit: u64,
    held: AtomicU64,
    /// Messages streamed because the budget could not cover them.
    not_held: AtomicU64,
}

impl Default for HeldBudget {
    /// No limit (tests and fuzz targets).
    fn default() -> Self {
        HeldBudget::new(usize::MAX)
    }
}

impl HeldBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        HeldBudget {
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
            held: AtomicU64::new(0),
            not_held: AtomicU64::new(0),
        }
    }

    /// Reserves `bytes`, or `None` when that would exceed the limit. The
    /// reservation ends when the returned guard is dropped.
    pub fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<HeldBytes> {
        let n = u64::try_from(bytes).ok()?;
        let mut current = self.held.load(Ordering::Relaxed);
        loop {
            let next = current.checked_add(n).filter(|&next| next <= self.limit)?;
            match self.held.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(HeldBytes {
                        budget: self.clone(),
                        bytes: n,
                    })
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Bytes reserved now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Counts a message streamed because the budget could not cover it.
    pub fn note_not_held(&self) {
        self.not_held.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages streamed because the budget could not cover them.
    pub fn not_held(&self) -> u64 {
        self.not_held.load(Ordering::Relaxed)
    }
}

/// A reservation in a [`HeldBudget`], returned when dropped.
#[derive(Debug)]
pub struct HeldBytes {
    budget: Arc<HeldBudget>,
    bytes: u64,
}

impl HeldBytes {
    /// The bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Slots for connections that have not finished startup (from accept to
/// the first ReadyForQuery), so that sockets which connect and then send
/// nothing, or stall in authentication, cannot take every connection.
///
/// When every slot is taken, a new connection takes the slot of the one
/// that has been starting up longest, provided that one has been at it for
/// at least `evict_after` (a real client finishes in milliseconds);
/// otherwise the new connection is refused. Stallers can therefore delay
/// real clients by a moment at most, never lock them out, and a burst of
/// real clients does not evict its own members.
#[derive(Debug)]
pub struct StartupSlots {
    capacity: usize,
    evict_after: Duration,
    /// Connections in startup by admission order (ids only grow, so the
    /// first entry is the one starting up longest).
    starting: Mutex<BTreeMap<u64, Starting>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Starting {
    since: Instant,
    eviction: Arc<Eviction>,
}

impl StartupSlots {
    /// `capacity` slots (at least one).
    pub fn new(capacity: usize, evict_after: Duration) -> Self {
        StartupSlots {
            capacity: capacity.max(1),
            evict_after,
            starting: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// A slot for a connection accepted at `now`, and whether another
    /// connection was evicted for it; `None` when every slot is taken by
    /// connections younger than the eviction age.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Option<(StartupSlot, bool)> {
        let mut starting = crate::lock(&self.starting);
        let mut evicted = false;
        if starting.len() >= self.capacity {
            let (_, oldest) = starting.first_key_value()?;
            if now.saturating_duration_since(oldest.since) < self.evict_after {
                return None;
            }
            if let Some((_, oldest)) = starting.pop_first() {
                oldest.eviction.evict();
                evicted = true;
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let eviction = Arc::new(Eviction::default());
        starting.insert(
            id,
            Starting {
                since: now,
                eviction: eviction.clone(),
            },
        );
        Some((
            StartupSlot {
                slots: self.clone(),
                id,
                eviction,
            },
            evicted,
        ))
    }

    /// Connections in startup now.
    pub fn len(&self) -> usize {
        crate::lock(&self.starting).len()
    }

    /// Whether no connection is in startup.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One connection's startup slot; dropping it (startup finished, or the
/// connection closed) frees the slot.
#[derive(Debug)]
pub struct StartupSlot {
    slots: Arc<StartupSlots>,
    id: u64,
    eviction: Arc<Eviction>,
}

impl StartupSlot {
    /// Resolves if this connection is evicted to make room for a newer one.
    pub fn eviction(&self) -> Arc<Eviction> {
        self.eviction.clone()
    }
}

impl Drop for StartupSlot {
    fn drop(&mut self) {
        crate::lock(&self.slots.starting).remove(&self.id);
        self.eviction.release();
    }
}

/// Tells a connection in startup that its slot was given to a newer one,
/// or that it no longer holds one.
#[derive(Debug, Default)]
pub struct Eviction {
    evicted: AtomicBool,
    /// The slot was given back (startup finished or the connection ended):
    /// it can no longer be evicted.
    released: AtomicBool,
    notify: Notify,
}

impl Eviction {
    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn release(&self) {
        self.released.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether the connection was evicted.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Resolves once the connection is evicted (at once if it already
    /// was); cancel-safe.
    pub async fn wait(&self) {
        self.until(|e| e.is_evicted()).await;
    }

    /// Resolves once the connection is evicted or its slot is given back
    /// (at once if either happened already); cancel-safe. Whether it was
    /// evicted is [`Eviction::is_evicted`].
    pub async fn settled(&self) {
        self.until(|e| e.is_evicted() || e.released.load(Ordering::Acquire))
            .await;
    }

    async fn until(&self, done: impl Fn(&Self) -> bool) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the flags are checked, so a change between
            // the check and the await still wakes it.
            notified.as_mut().enable();
            if done(self) {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_limit_and_return_when_dropped() {
        let budget = Arc::new(HeldBudget::new(100));
        let a = budget.try_reserve(60).unwrap();
        assert_eq!(a.bytes(), 60);
        assert!(budget.try_reserve(41).is_none());
        let b = budget.try_reserve(40).unwrap();
        assert_eq!(budget.held(), 100);
        assert!(budget.try_reserve(1).is_none());
        drop(a);
        assert_eq!(budget.held(), 40);
        let c = budget.try_reserve(60).unwrap();
        drop((b, c));
        assert_eq!(budget.held(), 0);
        // More than the whole budget never fits, and nothing overflows.
        assert!(budget.try_reserve(101).is_none());
        assert!(budget.try_reserve(usize::MAX).is_none());
        assert_eq!(budget.held(), 0);
        budget.note_not_held();
        assert_eq!(budget.not_held(), 1);
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let budget = Arc::new(HeldBudget::new(1000));
        let peak = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (budget, peak) = (budget.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(r) = budget.try_reserve(300) {
                            peak.fetch_max(budget.held(), Ordering::Relaxed);
                            drop(r);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 1000);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn the_unlimited_budget_takes_anything() {
        let budget = Arc::new(HeldBudget::default());
        let _big = budget.try_reserve(usize::MAX / 2).unwrap();
        assert!(budget.try_reserve(1 << 40).is_some());
    }

    #[test]
    fn a_full_house_evicts_the_oldest_once_it_is_old_enough() {
        let slots = Arc::new(StartupSlots::new(2, Duration::from_secs(1)));
        let t0 = Instant::now();
        let (first, evicted) = slots.admit(t0).unwrap();
        assert!(!evicted);
        let (second, _) = slots.admit(t0 + Duration::from_millis(10)).unwrap();
        assert_eq!(slots.len(), 2);
        // Both are young: a third is refused and nobody is evicted.
        assert!(slots.admit(t0 + Duration::from_millis(500)).is_none());
        assert!(!first.eviction().is_evicted());
        // Once the oldest has been starting up long enough, it makes room.
        let (third, evicted) = slots.admit(t0 + Duration::from_secs(2)).unwrap();
        assert!(evicted);
        assert!(first.eviction().is_evicted());
        assert!(!second.eviction().is_evicted());
        assert_eq!(slots.len(), 2);
        // The evicted connection's own drop frees nothing more.
        drop(first);
        assert_eq!(slots.len(), 2);
        // Finishing startup frees a slot without evicting anyone.
        drop(second);
        assert_eq!(slots.len(), 1);
        let (_fourth, evicted) = slots.admit(t0 + Duration::from_secs(2)).unwrap();
        assert!(!evicted && !third.eviction().is_evicted());
    }

    /// Runs `f` on a current-thread runtime with timers.
    fn with_timers(f: impl std::future::Future<Output = ()>) {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f);
    }

    #[test]
    fn eviction_wakes_a_waiter_and_is_remembered() {
        with_timers(async {
            let slots = Arc::new(StartupSlots::new(1, Duration::ZERO));
            let (first, _) = slots.admit(Instant::now()).unwrap();
            let eviction = first.eviction();
            let waiter = tokio::spawn(async move { eviction.wait().await });
            tokio::task::yield_now().await;
            let (_second, evicted) = slots.admit(Instant::now()).unwrap();
            assert!(evicted);
            tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .expect("the waiter wakes")
                .unwrap();
            // Waiting again after the fact returns at once.
            first.eviction().wait().await;
        });
    }

    #[test]
    fn giving_a_slot_back_settles_its_eviction_without_evicting() {
        with_timers(async {
            let slots = Arc::new(StartupSlots::new(1, Duration::ZERO));
            let (slot, _) = slots.admit(Instant::now()).unwrap();
            let eviction = slot.eviction();
            let waiter = {
                let eviction = eviction.clone();
                tokio::spawn(async move { eviction.settled().await })
            };
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished());
            drop(slot);
            tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .expect("the waiter wakes")
                .unwrap();
            assert!(!eviction.is_evicted());
            // A slot given back is not evicted by a later admission.
            let _next = slots.admit(Instant::now()).unwrap();
            assert!(!eviction.is_evicted());
            eviction.settled().await;
        });
    }
}
