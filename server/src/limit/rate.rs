//! Token buckets keyed by client (a publish token or an IP), pure: the
//! caller passes the time, so refill and eviction are tested without clocks.
//!
//! Each key may spend `rate_per_s` requests per second with a burst of the
//! same size (one second's worth). The map of keys is bounded by `keys_max`:
//! a flood of distinct keys (spoofed tokens, many IPs) cannot grow it
//! without limit. When it is full, buckets that have refilled completely are
//! forgotten first (a forgotten full bucket and a fresh one behave the
//! same, so that loses nothing); if that frees less than half the map, the
//! whole map is cleared. Each O(n) sweep therefore frees at least n/2
//! entries, so eviction costs O(1) per insert amortised. Clearing hands
//! every key a fresh burst once, which is the price of a bounded map under a
//! distinct-key flood, and it is counted (`evictions_total`).

use std::collections::HashMap;

/// Milli-tokens per request: tokens are kept in thousandths so a refill of
/// `elapsed_ms × rate_per_s` is exact integer arithmetic.
const COST_MILLI: u64 = 1000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens_milli: u64,
    last_ms: u64,
}

/// What [`RateLimiter::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the rate: try again in this many seconds (at least 1, for
    /// `Retry-After`).
    Limited {
        retry_after_s: u32,
    },
}

#[derive(Debug)]
pub struct RateLimiter {
    rate_per_s: u64,
    burst_milli: u64,
    keys_max: usize,
    buckets: HashMap<u64, Bucket>,
    evictions_total: u64,
}

impl RateLimiter {
    /// `rate_per_s` requests per second per key (≥ 1), burst of the same
    /// size, at most `keys_max` keys remembered (≥ 1).
    pub fn new(rate_per_s: u32, keys_max: usize) -> RateLimiter {
        let rate_per_s = u64::from(rate_per_s.max(1));
        RateLimiter {
            rate_per_s,
            burst_milli: rate_per_s * COST_MILLI,
            keys_max: keys_max.max(1),
            buckets: HashMap::new(),
            evictions_total: 0,
        }
    }

    /// Spend one request for `key` at `now_ms` (any monotonic clock).
    pub fn check(&mut self, key: u64, now_ms: u64) -> Verdict {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.keys_max {
            self.evict(now_ms);
        }
        let (rate, burst) = (self.rate_per_s, self.burst_milli);
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens_milli: burst,
            last_ms: now_ms,
        });
        // A clock that steps back refills nothing rather than underflowing.
        let elapsed_ms = now_ms.saturating_sub(b.last_ms);
        b.tokens_milli = b
            .tokens_milli
            .saturating_add(elapsed_ms.saturating_mul(rate))
            .min(burst);
        b.last_ms = b.last_ms.max(now_ms);
        if b.tokens_milli >= COST_MILLI {
            b.tokens_milli -= COST_MILLI;
            return Verdict::Allowed;
        }
        let missing_milli = COST_MILLI - b.tokens_milli;
        let wait_ms = missing_milli.div_ceil(rate);
        let retry_after_s = wait_ms.div_ceil(1000).clamp(1, u64::from(u32::MAX)) as u32;
        Verdict::Limited { retry_after_s }
    }

    fn evict(&mut self, now_ms: u64) {
        let (rate, burst) = (self.rate_per_s, self.burst_milli);
        self.buckets.retain(|_, b| {
            let refill = now_ms.saturating_sub(b.last_ms).saturating_mul(rate);
            b.tokens_milli.saturating_add(refill) < burst
        });
        if self.buckets.len() > self.keys_max / 2 {
            self.buckets.clear();
        }
        self.evictions_total += 1;
        debug_assert!(self.buckets.len() <= self.keys_max / 2);
    }

    /// Keys remembered now (≤ `keys_max`).
    pub fn keys(&self) -> usize {
        self.buckets.len()
    }

    /// Times the map was full and had to forget keys.
    pub fn evictions_total(&self) -> u64 {
        self.evictions_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(l: &mut RateLimiter, key: u64, now_ms: u64, n: u32) -> u32 {
        (0..n)
            .filter(|_| l.check(key, now_ms) == Verdict::Allowed)
            .count() as u32
    }

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let mut l = RateLimiter::new(10, 100);
        assert_eq!(allowed(&mut l, 1, 0, 25), 10, "burst = one second's worth");
        assert_eq!(
            l.check(1, 0),
            Verdict::Limited { retry_after_s: 1 },
            "Retry-After is at least 1 s"
        );
        // 100 ms later one token has come back, no more.
        assert_eq!(allowed(&mut l, 1, 100, 5), 1);
        // After a long pause the bucket is full again, not fuller.
        assert_eq!(allowed(&mut l, 1, 60_000, 50), 10);
    }

    #[test]
    fn keys_are_independent() {
        let mut l = RateLimiter::new(2, 100);
        assert_eq!(allowed(&mut l, 1, 0, 5), 2);
        assert_eq!(allowed(&mut l, 2, 0, 5), 2);
        assert_eq!(l.keys(), 2);
    }

    #[test]
    fn retry_after_covers_the_wait_for_one_token() {
        // 1 request per second: an empty bucket needs 1 s.
        let mut l = RateLimiter::new(1, 10);
        assert_eq!(l.check(7, 0), Verdict::Allowed);
        assert_eq!(l.check(7, 0), Verdict::Limited { retry_after_s: 1 });
        assert_eq!(l.check(7, 999), Verdict::Limited { retry_after_s: 1 });
        assert_eq!(l.check(7, 1000), Verdict::Allowed);
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let mut l = RateLimiter::new(1, 10);
        assert_eq!(l.check(1, 5_000), Verdict::Allowed);
        assert!(matches!(l.check(1, 0), Verdict::Limited { .. }));
        assert!(matches!(l.check(1, 5_500), Verdict::Limited { .. }));
        assert_eq!(l.check(1, 6_000), Verdict::Allowed);
    }

    #[test]
    fn the_map_stays_bounded_under_a_flood_of_keys() {
        let keys_max = 64;
        let mut l = RateLimiter::new(5, keys_max);
        for key in 0..10_000u64 {
            l.check(key, key / 100);
            assert!(l.keys() <= keys_max, "{} keys", l.keys());
        }
        assert!(l.evictions_total() > 0);
    }

    #[test]
    fn eviction_forgets_refilled_buckets_before_busy_ones() {
        let mut l = RateLimiter::new(1, 4);
        // Key 1 is busy (empty bucket); keys 2..=4 spent one token at t=0.
        assert_eq!(allowed(&mut l, 1, 0, 3), 1);
        for k in 2..=4 {
            l.check(k, 0);
        }
        // At t=10 s keys 2..=4 are full again; key 1 was refused at t=9.9 s.
        assert!(matches!(l.check(1, 9_900), Verdict::Allowed));
        assert!(matches!(l.check(1, 9_900), Verdict::Limited { .. }));
        l.check(5, 10_000);
        assert_eq!(l.keys(), 2, "refilled keys forgotten, busy key kept");
        assert!(matches!(l.check(1, 10_000), Verdict::Limited { .. }));
    }
}
