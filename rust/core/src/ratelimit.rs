//! Token bucket for the pump: a long-run average of exactly `rate` bytes/s while the stream
//! keeps up, bursts bounded by `burst` bytes, and small paced grants so that 10 ms windows are
//! smooth (no 100 ms quanta like `pv -L`, no 4 MiB blocks like `mbuffer -r`).
//!
//! The bucket is a pure state machine over a caller-supplied monotonic time (`now`, a Duration
//! since any fixed origin), so tests drive it with a fake clock and the pump with `Instant`.
use std::time::Duration;

use crate::error::{Error, Result};

/// Pace in steps of about this much time at the configured rate.
const PACE: f64 = 0.002;
/// Smallest step worth a system call.
const MIN_QUANTUM: u64 = 4096;
/// Largest step; beyond this a step is no longer "smooth" at any sensible rate.
const MAX_QUANTUM: u64 = 4 << 20;
/// Default burst: this much time at the configured rate...
const DEFAULT_BURST_TIME: f64 = 0.01;
/// ...but at least this many bytes, so sleeping a little too long never loses tokens.
const MIN_DEFAULT_BURST: u64 = 64 << 10;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    quantum: u64,
    /// Tokens = base + rate * (now - anchor) - consumed, capped at burst. Keeping the anchor
    /// fixed while the stream keeps up makes the long-run average exact (no rounding drift).
    anchor: Duration,
    base: f64,
    consumed: u64,
}

impl TokenBucket {
    /// `rate` in bytes/s (> 0, finite); `burst` in bytes (>= 1), default
    /// max(rate x 10 ms, 64 KiB). The bucket starts empty at `now`.
    pub fn new(rate: f64, burst: Option<u64>, now: Duration) -> Result<Self> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "rate must be a positive number of bytes per second, got {rate}"
            )));
        }
        let burst = match burst {
            Some(0) => {
                return Err(Error::InvalidArgument(
                    "burst must be at least 1 byte, got 0".into(),
                ))
            }
            Some(b) => b,
            None => ((rate * DEFAULT_BURST_TIME) as u64).max(MIN_DEFAULT_BURST),
        };
        let quantum = ((rate * PACE) as u64)
            .clamp(MIN_QUANTUM, MAX_QUANTUM)
            .min(burst);
        Ok(TokenBucket {
            rate,
            burst: burst as f64,
            quantum,
            anchor: now,
            base: 0.0,
            consumed: 0,
        })
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn burst(&self) -> u64 {
        self.burst as u64
    }

    /// Tokens available at `now` (never more than `burst`).
    pub fn available(&mut self, now: Duration) -> f64 {
        let elapsed = now.saturating_sub(self.anchor).as_secs_f64();
        let tokens = self.base + self.rate * elapsed - self.consumed as f64;
        if tokens > self.burst {
            // The stream fell behind (or just started idle): forget the excess.
            self.anchor = now;
            self.base = self.burst;
            self.consumed = 0;
            return self.burst;
        }
        tokens
    }

    /// Ask to move up to `want` bytes at `now`. `Ok(n)` (1 <= n <= want): move at most `n`
    /// bytes, then [`consume`](Self::consume) what actually moved. `Err(wait)`: ask again
    /// after `wait`.
    pub fn grant(&mut self, now: Duration, want: u64) -> std::result::Result<u64, Duration> {
        let want = want.max(1);
        let need = want.min(self.quantum) as f64;
        let tokens = self.available(now);
        if tokens >= need {
            Ok((tokens as u64).clamp(1, want))
        } else {
            Err(Duration::from_secs_f64((need - tokens) / self.rate))
        }
    }

    /// Record that `n` bytes moved.
    pub fn consume(&mut self, n: u64) {
        self.consumed += n;
    }

    /// Give back `n` bytes taken with [`consume`](Self::consume) that did not move after all
    /// (a shared budget takes tokens before the move so that no other pump can spend them).
    pub fn refund(&mut self, n: u64) {
        let back = n.min(self.consumed);
        self.consumed -= back;
        if back < n {
            self.base += (n - back) as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn rejects_bad_rates_and_bursts() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(TokenBucket::new(rate, None, ms(0)).is_err(), "{rate}");
        }
        assert!(TokenBucket::new(1.0, Some(0), ms(0)).is_err());
        let b = TokenBucket::new(50e6, None, ms(0)).unwrap();
        assert_eq!(b.burst(), 500_000);
        assert_eq!(b.rate(), 50e6); // the pump reports it in its stats
    }

    #[test]
    fn starts_empty_and_paces() {
        let mut b = TokenBucket::new(1_000_000.0, None, ms(0)).unwrap();
        let wait = b.grant(ms(0), 1 << 20).unwrap_err();
        assert_eq!(wait, Duration::from_micros(4096)); // the 4 KiB minimum quantum
                                                       // 1 ms later 1000 tokens are there: the wait is for the 3096 still missing
        let wait = b.grant(ms(1), 1 << 20).unwrap_err();
        assert!((wait.as_secs_f64() - 3096e-6).abs() < 1e-9, "{wait:?}");
        let n = b.grant(ms(10), 1 << 20).unwrap();
        assert_eq!(n, 10_000);
        b.consume(n);
        assert!(b.grant(ms(10), 1 << 20).is_err());
    }

    #[test]
    fn always_ready_stream_gets_exact_average() {
        let rate = 200e6;
        let mut b = TokenBucket::new(rate, None, Duration::ZERO).unwrap();
        let mut now = Duration::ZERO;
        let mut moved = 0u64;
        // a sender that sleeps exactly as told, plus 37 us of oversleep each time
        while now < Duration::from_secs(10) {
            match b.grant(now, 1 << 20) {
                Ok(n) => {
                    b.consume(n);
                    moved += n;
                }
                Err(wait) => now += wait + Duration::from_micros(37),
            }
        }
        let achieved = moved as f64 / now.as_secs_f64();
        assert!((achieved / rate - 1.0).abs() < 1e-3, "{achieved}");
    }

    #[test]
    fn refund_returns_unused_tokens() {
        let mut b = TokenBucket::new(1_000_000.0, None, ms(0)).unwrap();
        let n = b.grant(ms(50), 1 << 20).unwrap();
        b.consume(n);
        assert!(b.grant(ms(50), 1 << 20).is_err());
        b.refund(n / 2);
        assert_eq!(b.grant(ms(50), 1 << 20).unwrap(), n / 2);
    }

    #[test]
    fn idle_time_is_capped_at_the_burst() {
        // 1 MB/s with the default 64 KiB burst: after 10 s of idling, one grant may release
        // the burst and no more (an uncapped bucket would hand out 10 MB at once).
        let mut b = TokenBucket::new(1e6, None, ms(0)).unwrap();
        assert_eq!(b.burst(), 64 << 10);
        let n = b.grant(Duration::from_secs(10), 64 << 20).unwrap();
        assert_eq!(n, 64 << 10);
        b.consume(n);
        assert!(b.grant(Duration::from_secs(10), 64 << 20).is_err());
        // and from there on the rate, not the idle time, sets the pace
        let n = b.grant(Duration::from_secs(10) + ms(10), 64 << 20).unwrap();
        assert_eq!(n, 10_000);
        // an explicit burst is the cap too
        let mut b = TokenBucket::new(1e6, Some(5_000), ms(0)).unwrap();
        assert_eq!(b.grant(Duration::from_secs(3), 1 << 20), Ok(5_000));
    }

    proptest! {
        /// Whatever the sender does, bytes moved by time t never exceed rate * t + burst.
        #[test]
        fn never_exceeds_rate_times_t_plus_burst(
            rate in 1_000.0f64..1e10,
            burst in prop::option::of(1u64..(64 << 20)),
            steps in prop::collection::vec((0u64..50_000_000, 0u64..(8 << 20), 0u8..=100), 1..300),
        ) {
            let mut b = TokenBucket::new(rate, burst, Duration::ZERO).unwrap();
            let limit_burst = b.burst() as f64;
            let mut now = Duration::ZERO;
            let mut moved = 0u64;
            for (advance_ns, want, short) in steps {
                now += Duration::from_nanos(advance_ns);
                if let Ok(n) = b.grant(now, want) {
                    prop_assert!(n >= 1 && n <= want.max(1));
                    let m = n * u64::from(short) / 100; // short writes
                    b.consume(m);
                    moved += m;
                }
                let bound = rate * now.as_secs_f64() + limit_burst;
                prop_assert!(moved as f64 <= bound + 1.0, "moved {} > bound {}", moved, bound);
            }
        }

        /// In every window [t0, t1], not only from t = 0, the bytes moved stay within
        /// rate * (t1 - t0) + burst: idle time must not build up a credit beyond the burst.
        #[test]
        fn every_window_stays_within_rate_plus_burst(
            rate in 1_000.0f64..1e9,
            burst in prop::option::of(1u64..(1 << 20)),
            steps in prop::collection::vec((0u64..2_000_000_000, 0u64..(8 << 20)), 1..120),
        ) {
            let mut b = TokenBucket::new(rate, burst, Duration::ZERO).unwrap();
            let limit_burst = b.burst() as f64;
            let mut now = Duration::ZERO;
            // (time of the grant, bytes moved before it, bytes moved after it)
            let mut history: Vec<(f64, u64, u64)> = Vec::new();
            let mut moved = 0u64;
            for (advance_ns, want) in steps {
                now += Duration::from_nanos(advance_ns);
                if let Ok(n) = b.grant(now, want) {
                    b.consume(n);
                    history.push((now.as_secs_f64(), moved, moved + n));
                    moved += n;
                }
            }
            for (i, &(t0, before, _)) in history.iter().enumerate() {
                for &(t1, _, after) in &history[i..] {
                    let bound = rate * (t1 - t0) + limit_burst;
                    let in_window = (after - before) as f64;
                    prop_assert!(in_window <= bound + 1.0,
                        "{} bytes in [{}, {}] > {}", in_window, t0, t1, bound);
                }
            }
        }
    }
}
