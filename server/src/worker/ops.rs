//! What operating the node asks of a worker: picking up a SIGHUP reload
//! (once per tick, by generation) and spreading the reconnects of the
//! streams a drain closes.

use bytes::Bytes;

use std::net::{IpAddr, SocketAddr};

use super::{ms_to_ticks, Worker, TICK_MS};
use crate::api::{stream_preamble, ApiConfig, Headers, Response};
use crate::conn::{flag, CloseReason, Phase};
use crate::log::{Access, AccessKind};
use crate::wire::http::{Method, RequestHead};

fn method_bytes(m: Method) -> &'static [u8] {
    match m {
        Method::Get => b"GET",
        Method::Head => b"HEAD",
        Method::Post => b"POST",
        Method::Options => b"OPTIONS",
        Method::Other => b"OTHER",
    }
}

fn target_of(head: &RequestHead) -> Vec<u8> {
    let mut t = head.path.clone().into_bytes();
    if !head.query.is_empty() {
        t.push(b'?');
        t.extend_from_slice(head.query.as_bytes());
    }
    t
}

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

impl Worker {
    /// `--access-log`: one line for a request that is not a stream. Its
    /// duration is 0: requests are answered in the loop turn their head
    /// (and body) completes; the time they took to arrive is the client's.
    pub(super) fn access_request(&self, head: &RequestHead, peer: IpAddr, r: &Response) {
        if !crate::log::access_enabled() {
            return;
        }
        crate::log::access(&Access {
            kind: AccessKind::Request,
            peer: SocketAddr::new(peer, 0),
            method: method_bytes(head.method),
            target: &target_of(head),
            status: r.status,
            bytes: (r.body.len()) as u64,
            duration_ms: 0,
            reason: "",
            worker: self.id,
        });
    }

    /// `--access-log`: a stream opened. Its peer and start are kept in a
    /// side table (only while the access log is on: `Conn` stays small)
    /// for the close line.
    pub(super) fn access_stream_open(&mut self, key: u32, head: &RequestHead, peer: IpAddr) {
        if !crate::log::access_enabled() || self.conns[key as usize].phase != Phase::Streaming {
            return;
        }
        self.access_streams
            .insert(key, (peer, std::time::Instant::now()));
        crate::log::access(&Access {
            kind: AccessKind::StreamOpen,
            peer: SocketAddr::new(peer, 0),
            method: method_bytes(head.method),
            target: &target_of(head),
            status: 200,
            bytes: 0,
            duration_ms: 0,
            reason: "",
            worker: self.id,
        });
    }

    /// `--access-log`: a stream logged at its open closed.
    pub(super) fn access_stream_close(&mut self, key: u32, reason: CloseReason) {
        if self.access_streams.is_empty() {
            return;
        }
        let Some((peer, opened)) = self.access_streams.remove(&key) else {
            return;
        };
        crate::log::access(&Access {
            kind: AccessKind::StreamClose,
            peer: SocketAddr::new(peer, 0),
            method: b"GET",
            target: b"/events",
            status: 200,
            bytes: 0,
            duration_ms: opened.elapsed().as_millis() as u64,
            reason: reason.name(),
            worker: self.id,
        });
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
