//! The node's limits that are not request syntax: which limit refused a
//! request (for the counters and the logs), the per-IP connection count
//! shared by every worker, and the publish rate limit.
//!
//! - [`Limit`]: every refusal the server makes, with its status and the
//!   name it carries in `stentor_refusals_total{limit=...}`;
//! - [`PerIp`]: connections held per client IP, node-wide (one IP's
//!   connections spread over every worker by SO_REUSEPORT, so a per-worker
//!   count would let it hold workers × the limit);
//! - [`PublishRate`]: token buckets per publish token or IP ([`rate`]);
//! - [`note_refusal`]: count a refusal and log it, at most one line per
//!   limit per [`BITE_LOG_EVERY_MS`] with how many happened since.

pub mod rate;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use rate::{RateLimiter, Verdict};

/// Every way the server refuses a request or a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--max-connections`: the node is full (503, Retry-After).
    MaxConnections,
    /// `--max-connections-per-ip` (429).
    PerIp,
    /// `--publish-rate-per-s-max` (429, Retry-After).
    PublishRate,
    /// Answers queued faster than the client reads them (429).
    Pipelined,
    /// `--head-bytes-max` / `--headers-count-max` (431).
    HeadBytes,
    /// `--uri-bytes-max` (414).
    UriBytes,
    /// `--body-bytes-max` (413).
    BodyBytes,
    /// `--request-timeout-ms` (408).
    RequestTimeout,
    /// `--topic-bytes-max` and the topic charset (400).
    TopicName,
    /// `--topics-per-stream-max` (400).
    TopicsPerStream,
    /// Any other malformed request (400).
    Malformed,
    /// Missing or wrong token (401).
    Unauthorized,
    /// Not allowed from this peer (403).
    Forbidden,
    /// Unknown path (404).
    NotFound,
    /// Method not allowed on the path (405).
    Method,
    /// Publishing refused while a worker's inbox is full (503).
    PublishBacklog,
    /// A publish body that is neither JSON nor a form (415).
    MediaType,
    /// An `Expect` other than `100-continue` (417).
    Expectation,
    /// A transfer coding we do not decode (501).
    TransferCoding,
    /// An HTTP version other than 1.0 and 1.1 (505).
    Version,
    /// `--topics-max`: a publish would create one topic too many (503).
    TopicsMax,
    /// `--publish-batch-events-max` (413).
    PublishBatch,
    /// `--resume-rate-per-ip` (429, Retry-After).
    ResumeRate,
    /// `--request-buffers-bytes-max`: the worker's request buffers are
    /// full (503, Retry-After).
    RequestBuffers,
    /// A missing or malformed PROXY protocol header (400).
    ProxyProtocol,
    /// Fleet mode: the broker did not store a publish (503, Retry-After).
    BrokerUnavailable,
}

impl Limit {
    pub const ALL: [Limit; 26] = [
        Limit::MaxConnections,
        Limit::PerIp,
        Limit::PublishRate,
        Limit::Pipelined,
        Limit::HeadBytes,
        Limit::UriBytes,
        Limit::BodyBytes,
        Limit::RequestTimeout,
        Limit::TopicName,
        Limit::TopicsPerStream,
        Limit::Malformed,
        Limit::Unauthorized,
        Limit::Forbidden,
        Limit::NotFound,
        Limit::Method,
        Limit::PublishBacklog,
        Limit::MediaType,
        Limit::Expectation,
        Limit::TransferCoding,
        Limit::Version,
        Limit::TopicsMax,
        Limit::PublishBatch,
        Limit::ResumeRate,
        Limit::RequestBuffers,
        Limit::ProxyProtocol,
        Limit::BrokerUnavailable,
    ];

    pub fn status(self) -> u16 {
        match self {
            Limit::MaxConnections
            | Limit::PublishBacklog
            | Limit::TopicsMax
            | Limit::RequestBuffers
            | Limit::BrokerUnavailable => 503,
            Limit::PerIp | Limit::PublishRate | Limit::Pipelined | Limit::ResumeRate => 429,
            Limit::HeadBytes => 431,
            Limit::UriBytes => 414,
            Limit::BodyBytes | Limit::PublishBatch => 413,
            Limit::RequestTimeout => 408,
            Limit::TopicName | Limit::TopicsPerStream | Limit::Malformed | Limit::ProxyProtocol => {
                400
            }
            Limit::Unauthorized => 401,
            Limit::Forbidden => 403,
            Limit::NotFound => 404,
            Limit::Method => 405,
            Limit::MediaType => 415,
            Limit::Expectation => 417,
            Limit::TransferCoding => 501,
            Limit::Version => 505,
        }
    }

    /// The `limit` label value.
    pub fn name(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::PerIp => "per_ip",
            Limit::PublishRate => "publish_rate",
            Limit::Pipelined => "pipelined",
            Limit::HeadBytes => "head_bytes",
            Limit::UriBytes => "uri_bytes",
            Limit::BodyBytes => "body_bytes",
            Limit::RequestTimeout => "request_timeout",
            Limit::TopicName => "topic_name",
            Limit::TopicsPerStream => "topics_per_stream",
            Limit::Malformed => "malformed",
            Limit::Unauthorized => "unauthorized",
            Limit::Forbidden => "forbidden",
            Limit::NotFound => "not_found",
            Limit::Method => "method",
            Limit::PublishBacklog => "publish_backlog",
            Limit::MediaType => "media_type",
            Limit::Expectation => "expectation",
            Limit::TransferCoding => "transfer_coding",
            Limit::Version => "http_version",
            Limit::TopicsMax => "topics_max",
            Limit::PublishBatch => "publish_batch",
            Limit::ResumeRate => "resume_rate",
            Limit::RequestBuffers => "request_buffers",
            Limit::ProxyProtocol => "proxy_protocol",
            Limit::BrokerUnavailable => "broker_unavailable",
        }
    }

    /// The limit an error status stands for when the answer did not name
    /// one (parse errors carry only their status).
    pub fn from_status(status: u16) -> Limit {
        match status {
            431 => Limit::HeadBytes,
            414 => Limit::UriBytes,
            413 => Limit::BodyBytes,
            408 => Limit::RequestTimeout,
            401 => Limit::Unauthorized,
            403 => Limit::Forbidden,
            404 => Limit::NotFound,
            405 => Limit::Method,
            429 => Limit::Pipelined,
            503 => Limit::PublishBacklog,
            415 => Limit::MediaType,
            417 => Limit::Expectation,
            501 => Limit::TransferCoding,
            505 => Limit::Version,
            _ => Limit::Malformed,
        }
    }

    fn index(self) -> usize {
        Limit::ALL.iter().position(|l| *l == self).unwrap_or(0)
    }
}

/// Slow-client drops, logged like refusals (their counters live in
/// `metrics::COUNTERS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowDrop {
    /// `--queue-bytes-max`.
    QueueBytes,
    /// `--queue-age-ms-max`.
    QueueAge,
}

/// Log slots: one per limit, then one per kind of slow-client drop.
const LOG_SLOTS: usize = Limit::ALL.len() + 2;

/// Refusals per limit since start, and the state of the rate-limited log.
struct Bites {
    refused_total: [AtomicU64; Limit::ALL.len()],
    /// Bites not yet reported in a log line, per slot.
    unlogged: [AtomicU64; LOG_SLOTS],
    /// Who may write the next log line, per slot.
    log_gate: [crate::log::OncePer; LOG_SLOTS],
}

static BITES: Bites = Bites {
    refused_total: [const { AtomicU64::new(0) }; Limit::ALL.len()],
    unlogged: [const { AtomicU64::new(0) }; LOG_SLOTS],
    log_gate: [const { crate::log::OncePer::new(BITE_LOG_EVERY_MS) }; LOG_SLOTS],
};

/// A limit bite is logged at most once per this many milliseconds per
/// limit; the line says how many bites it stands for.
pub const BITE_LOG_EVERY_MS: u64 = 10_000;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process's first call (a monotonic clock for the
/// rate limiter and the bite log).
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// Count one bite in `slot`; `Some(bites since the last line)` when this
/// caller should write the line (at most once per period per slot, and at
/// once for the first bite).
fn bite_to_log(slot: usize) -> Option<u64> {
    BITES.unlogged[slot].fetch_add(1, Ordering::Relaxed);
    if !BITES.log_gate[slot].allow() {
        return None;
    }
    Some(BITES.unlogged[slot].swap(0, Ordering::Relaxed).max(1))
}

/// Count one refusal by `limit` and log it, rate-limited. Refusals are rare
/// next to deliveries, so shared atomics are fine here.
pub fn note_refusal(limit: Limit) {
    let i = limit.index();
    BITES.refused_total[i].fetch_add(1, Ordering::Relaxed);
    if let Some(count) = bite_to_log(i) {
        crate::warn!(
            "limit refused requests",
            limit = limit.name(),
            status = limit.status(),
            count = count,
            period_s = BITE_LOG_EVERY_MS / 1000
        );
    }
}

/// Log a slow client's drop, rate-limited like refusals.
pub fn note_drop(drop: SlowDrop) {
    let (slot, reason) = match drop {
        SlowDrop::QueueBytes => (Limit::ALL.len(), "queue_bytes"),
        SlowDrop::QueueAge => (Limit::ALL.len() + 1, "queue_age"),
    };
    if let Some(count) = bite_to_log(slot) {
        crate::warn!(
            "slow clients dropped",
            reason = reason,
            count = count,
            period_s = BITE_LOG_EVERY_MS / 1000
        );
    }
}

/// Refusals by `limit` since start.
pub fn refused_total(limit: Limit) -> u64 {
    BITES.refused_total[limit.index()].load(Ordering::Relaxed)
}

/// A client address as a map key. IPv4 (and v4-mapped v6) addresses are
/// kept whole; IPv6 ones by their /64, the block one host usually gets.
/// Never 0, so 0 can mean "not counted".
pub fn ip_key(ip: IpAddr) -> u64 {
    let v4_key = |v4: std::net::Ipv4Addr| (1 << 32) | u64::from(u32::from(v4));
    let key = match ip {
        IpAddr::V4(v4) => v4_key(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_key(v4),
            None => (u128::from(v6) >> 64) as u64,
        },
    };
    key.max(1)
}

/// A publish token as a rate-limit key (SipHash with fixed keys; the top
/// bit keeps token keys apart from IPv4 keys).
pub fn token_key(token: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut h);
    h.finish() | (1 << 63)
}

/// Shards of node-wide maps: a worker locks one shard (by key) for one
/// accept, close or publish, never per delivery.
pub const SHARDS: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connections held per client IP, shared by every worker.
pub struct PerIp {
    /// Atomic so a SIGHUP reload changes it under running workers.
    max_per_ip: std::sync::atomic::AtomicU32,
    shards: Box<[Mutex<HashMap<u64, u32>>]>,
}

impl PerIp {
    pub fn new(max_per_ip: u32) -> PerIp {
        PerIp {
            max_per_ip: std::sync::atomic::AtomicU32::new(max_per_ip),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<HashMap<u64, u32>> {
        &self.shards[(key as usize ^ (key >> 32) as usize) % SHARDS]
    }

    /// Count one more connection for `key`, unless it already holds the
    /// limit (then nothing is counted and `false` comes back). Entries
    /// exist only while their count is above zero, so the map is bounded
    /// by the connections open.
    pub fn acquire(&self, key: u64) -> bool {
        debug_assert_ne!(key, 0);
        let mut map = lock(self.shard(key));
        let n = map.entry(key).or_insert(0);
        if *n >= self.max_per_ip.load(std::sync::atomic::Ordering::Relaxed) {
            if *n == 0 {
                map.remove(&key);
            }
            return false;
        }
        *n += 1;
        true
    }

    /// A connection counted by [`Self::acquire`] closed.
    pub fn release(&self, key: u64) {
        let mut map = lock(self.shard(key));
        match map.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                map.remove(&key);
            }
            None => debug_assert!(false, "release of an IP that holds nothing"),
        }
    }

    /// A reload's new limit: connections already held above it stay, new
    /// ones are refused until the count falls below it.
    pub fn set_limit(&self, max_per_ip: u32) {
        self.max_per_ip
            .store(max_per_ip, std::sync::atomic::Ordering::Relaxed);
    }

    /// Connections counted for `key` now.
    pub fn held(&self, key: u64) -> u32 {
        lock(self.shard(key)).get(&key).copied().unwrap_or(0)
    }
}

/// Keys remembered per shard of the publish rate limiter: 16 × 4096 =
/// 65,536 publishers tracked at once.
pub const PUBLISH_RATE_KEYS_PER_SHARD_MAX: usize = 4096;

/// Publish rate limit per token or IP, shared by every worker (a publisher
/// whose requests land on several workers is still one publisher).
pub struct PublishRate {
    shards: Box<[Mutex<RateLimiter>]>,
}

impl PublishRate {
    pub fn new(rate_per_s: u32) -> PublishRate {
        PublishRate {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(RateLimiter::new(
                        rate_per_s,
                        PUBLISH_RATE_KEYS_PER_SHARD_MAX,
                    ))
                })
                .collect(),
        }
    }

    /// A reload's new rate: every bucket starts afresh at it (a reload is
    /// rare; a publisher gets at most one extra burst).
    pub fn set_rate(&self, rate_per_s: u32) {
        for shard in self.shards.iter() {
            *lock(shard) = RateLimiter::new(rate_per_s, PUBLISH_RATE_KEYS_PER_SHARD_MAX);
        }
    }

    pub fn check(&self, key: u64) -> Verdict {
        let shard = &self.shards[(key as usize ^ (key >> 32) as usize) % SHARDS];
        lock(shard).check(key, now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_has_a_distinct_name_and_an_error_status() {
        for (i, a) in Limit::ALL.iter().enumerate() {
            assert!(a.status() >= 400);
            assert_eq!(a.index(), i);
            for b in &Limit::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
        assert_eq!(Limit::from_status(431), Limit::HeadBytes);
        assert_eq!(Limit::from_status(400), Limit::Malformed);
        for l in Limit::ALL {
            // Statuses with one limit map back to it.
            if ![400, 413, 429, 503].contains(&l.status()) {
                assert_eq!(Limit::from_status(l.status()), l, "{l:?}");
            }
        }
    }

    #[test]
    fn per_ip_counts_across_callers_and_forgets_at_zero() {
        let p = PerIp::new(2);
        let k = ip_key("10.0.0.1".parse().unwrap());
        assert!(p.acquire(k) && p.acquire(k));
        assert!(!p.acquire(k), "third connection refused");
        assert_eq!(p.held(k), 2, "a refusal counts nothing");
        let other = ip_key("10.0.0.2".parse().unwrap());
        assert!(p.acquire(other), "other IPs are not affected");
        p.release(k);
        assert!(p.acquire(k));
        p.release(k);
        p.release(k);
        assert_eq!(p.held(k), 0);
        assert!(p.shards.iter().all(|s| !lock(s).contains_key(&k)));
    }

    #[test]
    fn ip_keys_group_v6_by_64_and_map_v4_mapped_to_v4() {
        let a = ip_key("2001:db8:1:2::1".parse().unwrap());
        let b = ip_key("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = ip_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            ip_key("::ffff:127.0.0.1".parse().unwrap()),
            ip_key("127.0.0.1".parse().unwrap())
        );
        assert_ne!(ip_key("::".parse().unwrap()), 0);
        assert_ne!(token_key(b"abc"), token_key(b"abd"));
    }

    #[test]
    fn publish_rate_is_per_key() {
        let r = PublishRate::new(3);
        let k = token_key(b"tok");
        let ok = (0..10).filter(|_| r.check(k) == Verdict::Allowed).count();
        assert_eq!(ok, 3);
        assert_eq!(r.check(token_key(b"other")), Verdict::Allowed);
    }
}
