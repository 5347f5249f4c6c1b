//! A node-wide bandwidth budget: one token bucket shared by every pump that runs at the same
//! time, on any thread, on top of each pump's own rate limit.
//!
//! Pumps *take* tokens before they move bytes (grant and consume under one lock, so two
//! pumps never spend the same tokens) and give back what did not move. The aggregate of all
//! pumps then never exceeds `rate x t + burst`, and while they keep up it is `rate` on average.
//! The rate can change while pumps run (a time-of-day schedule).
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::ratelimit::TokenBucket;

/// Default burst of a shared budget: this much time at its rate. Longer than a single pump's
/// (10 ms): with several pumps waking on a loaded machine an oversleep must not lose tokens.
const BURST_TIME: f64 = 0.05;
/// ...but at least this many bytes.
const MIN_BURST: u64 = 256 << 10;

#[derive(Debug)]
pub struct Budget {
    origin: Instant,
    bucket: Mutex<TokenBucket>,
    taken: std::sync::atomic::AtomicU64,
}

fn burst_for(rate: f64) -> u64 {
    if rate.is_finite() && rate > 0.0 {
        ((rate * BURST_TIME) as u64).max(MIN_BURST)
    } else {
        MIN_BURST
    }
}

impl Budget {
    /// A budget of `rate` bytes/s (> 0, finite), starting empty now.
    pub fn new(rate: f64) -> Result<Self> {
        Ok(Budget {
            origin: Instant::now(),
            bucket: Mutex::new(TokenBucket::new(
                rate,
                Some(burst_for(rate)),
                Duration::ZERO,
            )?),
            taken: Default::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, TokenBucket> {
        // The bucket is plain numbers: a panic elsewhere cannot leave it half-updated.
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn rate(&self) -> f64 {
        self.lock().rate()
    }

    /// Change the rate from now on (running pumps follow at their next step).
    pub fn set_rate(&self, rate: f64) -> Result<()> {
        let now = self.now();
        let mut bucket = self.lock();
        let burst = burst_for(rate);
        let fresh = TokenBucket::new(rate, Some(burst), now)?;
        let keep = bucket.available(now).clamp(0.0, burst as f64) as u64;
        *bucket = fresh;
        bucket.refund(keep);
        Ok(())
    }

    /// Take up to `want` bytes' worth of tokens: `Ok(n)` (1 <= n <= want) are now reserved for
    /// the caller, who must [`give_back`](Self::give_back) whatever does not move;
    /// `Err(wait)`: try again after `wait`.
    pub fn take(&self, want: u64) -> std::result::Result<u64, Duration> {
        let now = self.now();
        let mut bucket = self.lock();
        let n = bucket.grant(now, want)?;
        bucket.consume(n);
        self.taken
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    /// Return `n` tokens taken with [`take`](Self::take) that were not used.
    pub fn give_back(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.lock().refund(n);
        self.taken
            .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes moved under this budget so far (taken minus given back).
    pub fn bytes(&self) -> u64 {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn rejects_bad_rates() {
        assert!(Budget::new(0.0).is_err());
        let b = Budget::new(1e6).unwrap();
        assert!(b.set_rate(f64::NAN).is_err());
        assert_eq!(b.rate(), 1e6);
    }

    #[test]
    fn give_back_makes_tokens_available_again() {
        let b = Budget::new(1e6).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let n = b.take(1 << 20).unwrap();
        assert!(n >= 25_000, "{n}");
        assert!(b.take(1 << 20).is_err());
        b.give_back(n);
        assert_eq!(b.bytes(), 0);
        assert!(b.take(1 << 20).unwrap() >= n);
    }

    /// Idle long enough to fill up, a budget holds exactly its burst: 50 ms at its rate...
    #[test]
    fn burst_is_fifty_milliseconds_of_the_rate() {
        let b = Budget::new(1e8).unwrap();
        std::thread::sleep(Duration::from_millis(100)); // 10 MB at the rate, capped at 5 MB
        assert_eq!(b.take(u64::MAX), Ok(5_000_000));
        assert_eq!(b.bytes(), 5_000_000);
    }

    /// ...but never less than 256 KiB (50 ms at 1 MB/s would be 50 000 bytes).
    #[test]
    fn slow_budgets_get_the_minimum_burst() {
        let b = Budget::new(1e6).unwrap();
        std::thread::sleep(Duration::from_millis(400)); // 400 000 bytes at the rate
        assert_eq!(b.take(u64::MAX), Ok(256 << 10));
    }

    /// A new rate applies at once, with its own burst: the tokens saved at the old rate are
    /// kept only up to the new burst.
    #[test]
    fn set_rate_applies_the_new_rate_and_its_burst() {
        let b = Budget::new(1e8).unwrap();
        std::thread::sleep(Duration::from_millis(100)); // full: 5 MB
        b.set_rate(1e6).unwrap();
        assert_eq!(b.rate(), 1e6);
        assert_eq!(b.take(u64::MAX), Ok(256 << 10));
    }

    /// Four threads hammering one budget move `rate` bytes/s together, within 2 %.
    #[test]
    fn threads_share_the_rate() {
        let rate = 40e6;
        let budget = Arc::new(Budget::new(rate).unwrap());
        let start = Instant::now();
        let run = Duration::from_millis(800);
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let budget = Arc::clone(&budget);
                std::thread::spawn(move || {
                    while start.elapsed() < run {
                        match budget.take(1 << 20) {
                            Ok(n) => budget.give_back(n / 10), // a short write now and then
                            Err(wait) => std::thread::sleep(wait),
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let achieved = budget.bytes() as f64 / start.elapsed().as_secs_f64();
        assert!(
            achieved <= rate * 1.02 + (burst_for(rate) as f64),
            "{achieved}"
        );
        assert!(achieved >= rate * 0.95, "{achieved}");
    }
}
