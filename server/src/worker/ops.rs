//! What operating the node asks of a worker: picking up a SIGHUP reload
//! (once per tick, by generation) and spreading the reconnects of the
//! streams a drain closes.

use bytes::Bytes;

use super::{ms_to_ticks, Worker, TICK_MS};
use crate::api::{stream_preamble, ApiConfig, Headers};
use crate::conn::{flag, Phase};

impl Worker {
    /// Called every tick: one atomic load unless the node reloaded its
    /// configuration, then the live settings take effect for new requests
    /// and streams and for the next sweeps. What needs a restart (the
    /// listeners, the rings, trusted proxies, the admin port) stays.
    pub(super) fn pick_up_reload(&mut self) {
        let Some((generation, config)) = self.shared.reloaded_since(self.reload_generation) else {
            return;
        };
        self.reload_generation = generation;
        let mut api = ApiConfig::from_config(&config);
        api.trusted_proxies = std::mem::take(&mut self.api.trusted_proxies);
        api.metrics_public = self.api.metrics_public;
        self.api = api;
        self.limits = config.http_limits();
        self.ticks.request = ms_to_ticks(config.request_timeout_ms);
        self.ticks.idle = ms_to_ticks(config.idle_timeout_ms);
        self.ticks.heartbeat = ms_to_ticks(config.heartbeat_ms);
        self.ticks.queue_age = ms_to_ticks(config.queue_age_ms_max);
        self.ticks.shutdown = (u64::from(config.shutdown_ms) / TICK_MS) as u32;
        self.queue_bytes_max = config.queue_bytes_max;
        self.retry_ms = config.retry_ms;
        self.reconnect_spread_ms = config.reconnect_spread_ms;
        self.stream_preamble = Bytes::from(stream_preamble(config.retry_ms, &Headers::new()));
        crate::debug!(
            "worker picked up a reload",
            worker = self.id,
            generation = generation
        );
    }

    /// On drain, before the streams close: queue each one a last `retry:`
    /// of `--retry-ms` plus its own delay drawn uniformly from
    /// `--reconnect-spread-ms`, so a node's clients come back over the
    /// window instead of in the same second (a thundering herd on whichever
    /// node takes them). Nothing when the window is 0.
    pub(super) fn queue_spread_retries(&mut self) {
        if self.reconnect_spread_ms == 0 {
            return;
        }
        let window = u64::from(self.reconnect_spread_ms);
        let mut rng = SplitMix64(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ ((self.id as u64) << 48),
        );
        let now = self.now;
        for (key, conn) in self.conns.iter_mut() {
            if conn.phase != Phase::Streaming {
                continue;
            }
            let delay_ms = u64::from(self.retry_ms) + rng.below(window);
            conn.sendq
                .push(Bytes::from(format!("retry: {delay_ms}\n\n")), now);
            if !conn.has(flag::DIRTY) {
                conn.set(flag::DIRTY);
                self.dirty.push(key as u32);
            }
        }
    }
}

/// A small, fast generator for spreading delays: not for secrets, and
/// seeded per drain so two nodes drained together still spread.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform over `0..n` (`n > 0`), by the multiply-shift of Lemire.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    /// Delays cover the window evenly: each tenth of it gets a tenth of
    /// 10,000 draws, within a loose margin.
    #[test]
    fn spread_delays_are_uniform_over_the_window() {
        let mut rng = SplitMix64(42);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let d = rng.below(10_000);
            assert!(d < 10_000);
            buckets[(d / 1_000) as usize] += 1;
        }
        for b in buckets {
            assert!((800..1200).contains(&b), "{buckets:?}");
        }
    }
}
