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

use tokio::sync::Notify;

/// Shortest time between two cuts of the limit.
const CUT_INTERVAL: Duration = Duration::from_millis(500);

/// The shared congestion state of one run.
#[derive(Debug)]
pub struct Congestion {
    max: AtomicUsize,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    successes: AtomicUsize,
    lowest: AtomicUsize,
    cuts: AtomicU64,
    last_cut: Mutex<Option<Instant>>,
    notify: Notify,
}

impl Default for Congestion {
    fn default() -> Self {
        Congestion {
            max: AtomicUsize::new(usize::MAX),
            limit: AtomicUsize::new(usize::MAX),
            in_flight: AtomicUsize::new(0),
            successes: AtomicUsize::new(0),
            lowest: AtomicUsize::new(usize::MAX),
            cuts: AtomicU64::new(0),
            last_cut: Mutex::new(None),
            notify: Notify::new(),
        }
    }
}

/// A transfer slot; released when dropped.
#[derive(Debug)]
pub struct Slot<'a>(&'a Congestion);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }
}

impl Congestion {
    /// Sets the most transfers allowed in flight (the run's concurrency).
    pub fn configure(&self, max: usize) {
        let max = max.max(1);
        self.max.store(max, Ordering::SeqCst);
        self.limit.store(max, Ordering::SeqCst);
        self.lowest.store(max, Ordering::SeqCst);
        self.cuts.store(0, Ordering::SeqCst);
        self.successes.store(0, Ordering::SeqCst);
        *self.last_cut.lock().expect("lock") = None;
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
        let now = (self.limit.load(Ordering::SeqCst) / 2).max(1);
        self.limit.store(now, Ordering::SeqCst);
        self.lowest.fetch_min(now, Ordering::SeqCst);
        self.cuts.fetch_add(1, Ordering::SeqCst);
        tracing::info!("the store asked to slow down; transfers in flight now at most {now}");
    }

    fn success(&self) {
        let limit = self.limit.load(Ordering::SeqCst);
        let max = self.max.load(Ordering::SeqCst);
        if limit >= max {
            return;
        }
        // One slot back per `limit` successes: additive increase.
        if self.successes.fetch_add(1, Ordering::SeqCst) + 1 >= limit {
            self.successes.store(0, Ordering::SeqCst);
            let _ = self.limit.compare_exchange(
                limit,
                (limit + 1).min(max),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            self.notify.notify_waiters();
        }
    }

    /// Waits for a transfer slot under the current limit.
    pub async fn acquire(&self) -> Slot<'_> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let cur = self.in_flight.load(Ordering::SeqCst);
            if cur < self.limit.load(Ordering::SeqCst)
                && self
                    .in_flight
                    .compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                return Slot(self);
            }
            if cur < self.limit.load(Ordering::SeqCst) {
                continue; // lost a race for the slot; try again at once
            }
            notified.await;
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
}
