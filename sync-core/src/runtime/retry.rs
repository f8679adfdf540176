//! Retrying transient failures with jittered exponential backoff.
//!
//! The HTTP clients inside `object_store` already retry individual requests
//! that fail with 5xx, 429 or a connection error. This layer retries a whole
//! file transfer when something fails that a request-level retry cannot see:
//! a body cut off mid-stream, a short read, a reset during an upload.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

/// How a failed transfer is retried.
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Attempts per file, the first included. Default 5.
    pub max_attempts: u32,
    /// Delay before the first retry. Default 200 ms.
    pub initial_backoff: Duration,
    /// Longest delay between attempts. Default 10 s.
    pub max_backoff: Duration,
    /// Longest total time spent waiting between attempts of one file.
    /// Default 2 minutes.
    pub max_total: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_total: Duration::from_secs(120),
        }
    }
}

impl RetryConfig {
    /// The delay before retry number `attempt` (1-based): exponential, capped
    /// and with full jitter, so many failing transfers do not retry in step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let cap = exp.min(self.max_backoff);
        let jitter: f64 = rand::random::<f64>();
        cap.mul_f64(0.5 + jitter / 2.0)
    }

    /// Runs `op` until it succeeds, fails permanently, or the attempts or the
    /// time budget run out. `on_retry` is told about each retry.
    ///
    /// # Errors
    /// The last error.
    pub async fn run<T, F, Fut>(
        &self,
        mut op: F,
        mut on_retry: impl FnMut(u32, &Error),
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e)
                    if e.is_retryable()
                        && attempt < self.max_attempts
                        && waited < self.max_total =>
                {
                    on_retry(attempt, &e);
                    let d = self.backoff(attempt).min(self.max_total - waited);
                    tokio::time::sleep(d).await;
                    waited += d;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> Error {
        Error::Mismatch {
            path: "p".into(),
            what: "size",
            expected: "2".into(),
            actual: "1".into(),
            retryable: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_then_succeeds() {
        let calls = AtomicU32::new(0);
        let mut retries = 0;
        let r = RetryConfig::default()
            .run(
                || async {
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(transient())
                    } else {
                        Ok(7)
                    }
                },
                |_, _| retries += 1,
            )
            .await
            .unwrap();
        assert_eq!(r, 7);
        assert_eq!(retries, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_fail_at_once() {
        let calls = AtomicU32::new(0);
        let r: Result<()> = RetryConfig::default()
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(Error::InvalidArgument {
                        argument: "test",
                        reason: "permanent".into(),
                    })
                },
                |_, _| {},
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_within_budget() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let cfg = RetryConfig::default();
        let r: Result<()> = cfg
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(transient())
                },
                |_, _| {},
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), cfg.max_attempts);
        assert!(start.elapsed() <= cfg.max_total);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = RetryConfig::default();
        for attempt in 1..20 {
            let d = cfg.backoff(attempt);
            assert!(d <= cfg.max_backoff);
        }
        assert!(cfg.backoff(1) <= Duration::from_millis(200));
        assert!(cfg.backoff(5) >= Duration::from_millis(1600));
    }
}
