//! Adapting concurrency to a store that asks to slow down.
//!
//! Every HTTP response's status is reported to a [`Congestion`] (the CLI
//! wires the object-store HTTP client to it). A `429 Too Many Requests` or
//! `503 SlowDown` halves the number of transfers allowed in flight, at most
//! once per half second; successful responses win the slots back one at a
//! time. Transfers wait for a slot before they start, so the run backs off as
//! a whole instead of every transfer retrying into the same wall.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Shortest time between two cuts of the limit.
const CUT_INTERVAL: Duration = Duration::from_millis(500);

/// The shared congestion state of one run: a semaphore whose permits are
/// the transfers allowed in flight, shrunk and grown as the store answers.
#[derive(Debug)]
pub struct Congestion {
    slots: Semaphore,
    /// The configured concurrency.
    max: AtomicUsize,
    /// The current limit: `max` minus the permits taken out of circulation.
    limit: AtomicUsize,
    /// Permits to take out of circulation as transfers finish (a cut that
    /// could not take them at once because they were in use).
    debt: AtomicUsize,
    /// Slots held right now.
    in_use: AtomicUsize,
    successes: AtomicUsize,
    lowest: AtomicUsize,
    cuts: AtomicU64,
    last_cut: Mutex<Option<Instant>>,
}

impl Default for Congestion {
    /// Unconfigured: effectively no limit until [`Congestion::configure`].
    fn default() -> Self {
        Congestion {
            slots: Semaphore::new(Semaphore::MAX_PERMITS),
            max: AtomicUsize::new(Semaphore::MAX_PERMITS),
            limit: AtomicUsize::new(Semaphore::MAX_PERMITS),
            debt: AtomicUsize::new(0),
            in_use: AtomicUsize::new(0),
            successes: AtomicUsize::new(0),
            lowest: AtomicUsize::new(Semaphore::MAX_PERMITS),
            cuts: AtomicU64::new(0),
            last_cut: Mutex::new(None),
        }
    }
}

/// A transfer slot; released when dropped (or taken out of circulation, if
/// the limit was cut meanwhile).
#[derive(Debug)]
pub struct Slot<'a> {
    permit: Option<SemaphorePermit<'a>>,
    owner: &'a Congestion,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.owner.in_use.fetch_sub(1, Ordering::SeqCst);
        if let Some(p) = self.permit.take() {
            if self.owner.take_debt() {
                p.forget();
            }
        }
    }
}

impl Congestion {
    /// Sets the most transfers allowed in flight (the run's concurrency).
    /// Slots already held count against the new limit.
    pub fn configure(&self, max: usize) {
        let mut last_cut = self.last_cut.lock().expect("lock");
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        let held = self.in_use.load(Ordering::SeqCst);
        // Free permits are what is left of `max` once the slots held go
        // back; any excess held now is taken out as it is released.
        let want_free = max.saturating_sub(held);
        let available = self.slots.available_permits();
        if available > want_free {
            self.slots.forget_permits(available - want_free);
        } else {
            self.slots.add_permits(want_free - available);
        }
        self.debt.store(held.saturating_sub(max), Ordering::SeqCst);
        self.max.store(max, Ordering::SeqCst);
        self.limit.store(max, Ordering::SeqCst);
        self.lowest.store(max, Ordering::SeqCst);
        self.cuts.store(0, Ordering::SeqCst);
        self.successes.store(0, Ordering::SeqCst);
        *last_cut = None;
    }

    /// Reports one HTTP response status.
    pub fn observe_status(&self, status: u16) {
        match status {
            429 | 503 => self.slow_down(),
            s if s < 400 => self.success(),
            _ => {}
        }
    }

    fn slow_down(&self) {
        let mut last = self.last_cut.lock().expect("lock");
        if last.is_some_and(|t| t.elapsed() < CUT_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        let limit = self.limit.load(Ordering::SeqCst);
        let now = (limit / 2).max(1);
        self.limit.store(now, Ordering::SeqCst);
        self.lowest.fetch_min(now, Ordering::SeqCst);
        self.cuts.fetch_add(1, Ordering::SeqCst);
        // Take idle permits out at once; those in use go when released.
        let mut remove = limit - now;
        let idle = self.slots.forget_permits(remove);
        remove -= idle;
        self.debt.fetch_add(remove, Ordering::SeqCst);
        tracing::info!("the store asked to slow down; transfers in flight now at most {now}");
    }

    fn success(&self) {
        let limit = self.limit.load(Ordering::SeqCst);
        let max = self.max.load(Ordering::SeqCst);
        if limit >= max {
            return;
        }
        // One slot back per `limit` successes: additive increase, under the
        // same lock as a cut so the two never interleave.
        if self.successes.fetch_add(1, Ordering::SeqCst) + 1 >= limit {
            let _cut = self.last_cut.lock().expect("lock");
            self.successes.store(0, Ordering::SeqCst);
            if self
                .limit
                .compare_exchange(limit, limit + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
                && !self.take_debt()
            {
                self.slots.add_permits(1);
            }
        }
    }

    /// Takes one unit of debt, if there is any.
    fn take_debt(&self) -> bool {
        self.debt
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
            .is_ok()
    }

    /// Waits for a transfer slot under the current limit.
    pub async fn acquire(&self) -> Slot<'_> {
        // The semaphore is never closed.
        let permit = self.slots.acquire().await.ok();
        self.in_use.fetch_add(1, Ordering::SeqCst);
        Slot {
            permit,
            owner: self,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::SeqCst)
    }

    /// The lowest limit reached so far.
    pub fn lowest(&self) -> usize {
        self.lowest.load(Ordering::SeqCst)
    }

    /// How many times the limit was cut.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_slow_down_and_recovers_on_success() {
        let c = Congestion::default();
        c.configure(8);
        c.observe_status(503);
        assert_eq!(c.limit(), 4);
        c.observe_status(429); // within the cut interval: ignored
        assert_eq!(c.limit(), 4);
        *c.last_cut.lock().unwrap() = None;
        c.observe_status(429);
        assert_eq!(c.limit(), 2);
        assert_eq!(c.lowest(), 2);
        for _ in 0..2 {
            c.observe_status(200);
        }
        assert_eq!(c.limit(), 3);
        for _ in 0..100 {
            c.observe_status(200);
        }
        assert_eq!(c.limit(), 8, "never above the configured maximum");
        c.observe_status(404);
        assert_eq!(c.limit(), 8);
        assert_eq!(c.cuts(), 2);
    }

    #[tokio::test]
    async fn slots_respect_the_limit() {
        let c = std::sync::Arc::new(Congestion::default());
        c.configure(2);
        let a = c.acquire().await;
        let _b = c.acquire().await;
        let c2 = c.clone();
        let third = tokio::spawn(async move {
            let _s = c2.acquire().await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "a third slot must wait");
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("released slot is handed on")
            .unwrap();
    }

    #[tokio::test]
    async fn a_cut_takes_busy_slots_out_as_they_are_released() {
        let c = Congestion::default();
        c.configure(4);
        let held: Vec<_> = futures::future::join_all((0..4).map(|_| c.acquire())).await;
        c.observe_status(503);
        assert_eq!(c.limit(), 2);
        drop(held);
        // Two of the four released permits went out of circulation.
        let a = c.acquire().await;
        let b = c.acquire().await;
        let third = tokio::time::timeout(Duration::from_millis(50), c.acquire()).await;
        assert!(third.is_err(), "only two slots after the cut");
        drop((a, b));
    }

    #[tokio::test]
    async fn configuring_again_counts_slots_still_held() {
        let c = Congestion::default();
        c.configure(2);
        let a = c.acquire().await;
        let b = c.acquire().await;
        // Another run sharing the state configures it while these are held.
        c.configure(2);
        drop((a, b));
        let _x = c.acquire().await;
        let _y = c.acquire().await;
        let third = tokio::time::timeout(Duration::from_millis(50), c.acquire()).await;
        assert!(third.is_err(), "still two slots, not four");
    }
}
