//! Rate limits kept in memory, per key (an address, a credential, an email):
//! `governor`'s keyed GCRA, so a burst is allowed once and then a steady
//! rate, with no window edge to burst twice across.
//!
//! Memory stays bounded under a flood of distinct keys: every
//! [`SWEEP_EVERY`] checks, the keys whose state is back to fresh are dropped
//! (`governor` keeps a key until two periods after its last use). So at most
//! the keys used within two periods, plus [`SWEEP_EVERY`], are held, however
//! many an attacker makes up.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Checks between two sweeps of the keys back to fresh.
pub const SWEEP_EVERY: u32 = 1024;

/// A budget per key: `burst` at once, then one more every `period`.
pub struct Throttle<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    limiter: RateLimiter<K, DefaultKeyedStateStore<K>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    checks: AtomicU32,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    pub fn new(burst: NonZeroU32, period: Duration) -> Self {
        Throttle::with_clock(burst, period, DefaultClock::default())
    }

    /// `n` a minute per key, all of them at once if a caller wants.
    pub fn per_minute(n: NonZeroU32) -> Self {
        Throttle::new(n, Duration::from_secs(60) / n.get())
    }
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Throttle<K, C> {
    pub fn with_clock(burst: NonZeroU32, period: Duration, clock: C) -> Self {
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("a period above zero")
            .allow_burst(burst);
        Throttle {
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone()),
            clock,
            checks: AtomicU32::new(0),
        }
    }

    /// Spend one of `key`'s budget; when it has none, how long until it has.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// Whole seconds to wait, at least one (for `Retry-After` and messages).
pub fn seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn a_burst_then_a_steady_rate_per_key() {
        let clock = FakeRelativeClock::default();
        let t = Throttle::with_clock(nz(3), Duration::from_secs(10), clock.clone());
        for _ in 0..3 {
            assert_eq!(t.check(&"a"), Ok(()));
        }
        let wait = t.check(&"a").unwrap_err();
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert_eq!(t.check(&"b"), Ok(()), "another key has its own budget");
        // One more after a period, not a fresh burst: no window edge to burst across.
        clock.advance(Duration::from_secs(10));
        assert_eq!(t.check(&"a"), Ok(()));
        assert!(t.check(&"a").is_err());
    }

    #[test]
    fn a_flood_of_distinct_keys_keeps_memory_bounded() {
        let clock = FakeRelativeClock::default();
        let t = Throttle::with_clock(nz(5), Duration::from_millis(100), clock.clone());
        let mut most = 0;
        for i in 0..200_000u32 {
            // 10,000 new keys a second: each is back to fresh 100 ms after its use.
            clock.advance(Duration::from_micros(100));
            assert!(t.check(&i).is_ok());
            most = most.max(t.len());
        }
        // Keys of the last two periods (2,000) plus one sweep interval, never the 200,000 seen.
        assert!(most <= 2_000 + SWEEP_EVERY as usize + 1, "held {most} keys");
        println!("200000 distinct keys: at most {most} held at once");
    }

    #[test]
    fn waits_are_whole_seconds_rounded_up() {
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_millis(2001)), 3);
        assert_eq!(seconds(Duration::ZERO), 1);
    }
}
