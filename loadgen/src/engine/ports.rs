//! Source (address, port) pairs chosen by us instead of the kernel.
//!
//! Why: for many connections from one address to one server port, the
//! kernel's connect() walks the ports already taken from the same starting
//! offset each time, which is quadratic: measured here, 40k connections over
//! two addresses cost 15 s of system time, 72% in `__inet_check_established`.
//! Binding an explicit, unused port makes each connect O(1). Threads take
//! disjoint ports (port ≡ thread mod threads) so they never race for one.
//! Pairs an earlier connection to the server still holds (see
//! [`super::busy`]) are skipped, so a run started right after another never
//! meets the previous run's closing connections.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::busy::BusyPairs;

/// Lowest and highest port handed out. Low ports are left alone so a run
/// never holds a port a local service (8080, 5432, ...) may want to bind.
pub const PORT_MIN: u32 = 10_000;
pub const PORT_MAX: u32 = 65_535;

#[derive(Debug, Clone)]
pub struct PortCursor {
    ips: Vec<Ipv4Addr>,
    thread: u32,
    threads: u32,
    next: u64,
    busy: Arc<BusyPairs>,
}

impl PortCursor {
    pub fn new(ips: Vec<Ipv4Addr>, thread: usize, threads: usize, busy: Arc<BusyPairs>) -> Self {
        assert!(!ips.is_empty() && threads > 0 && thread < threads);
        Self {
            ips,
            thread: thread as u32,
            threads: threads as u32,
            next: 0,
            busy,
        }
    }

    /// Start at a point of the cycle that depends on `seed` (the process id):
    /// two loadgen processes on one machine (a distributed run) then start
    /// far apart instead of both at the first port and colliding pair by pair.
    pub fn starting_at(mut self, seed: u64) -> Self {
        // Fibonacci hashing spreads consecutive pids over the cycle.
        self.next = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        self
    }

    /// Pairs this thread owns: every address for each of its ports.
    pub fn capacity(&self) -> u64 {
        let ports = (PORT_MAX - PORT_MIN + 1 - self.thread).div_ceil(self.threads) as u64;
        ports * self.ips.len() as u64
    }

    /// The next pair not busy at the start of the run, cycling through
    /// addresses first so they fill evenly; wraps around after
    /// [`Self::capacity`] (old ports are free by then, or bind/connect say
    /// so and the caller takes the next). `None` when every pair is busy.
    pub fn next_pair(&mut self) -> Option<(Ipv4Addr, u16)> {
        let cap = self.capacity();
        for _ in 0..cap {
            let i = self.next % cap;
            self.next += 1;
            let k = self.ips.len() as u64;
            let ip = self.ips[(i % k) as usize];
            let port = PORT_MIN + self.thread + self.threads * (i / k) as u32;
            debug_assert!(port <= PORT_MAX);
            if !self.busy.contains(&(ip, port as u16)) {
                return Some((ip, port as u16));
            }
        }
        None
    }
}

/// Pairs `ips` offer that are not busy: what a run can connect at most.
pub fn free_pairs(ips: &[Ipv4Addr], busy: &BusyPairs) -> u64 {
    let all = (PORT_MAX - PORT_MIN + 1) as u64 * ips.len() as u64;
    let taken = busy
        .iter()
        .filter(|(ip, port)| ips.contains(ip) && (PORT_MIN..=PORT_MAX).contains(&(*port as u32)))
        .count() as u64;
    all - taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_never_share_a_pair_and_ports_stay_in_range() {
        let ips = vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
        let mut seen = std::collections::HashSet::new();
        for t in 0..3 {
            let mut c = PortCursor::new(ips.clone(), t, 3, Arc::default());
            for _ in 0..c.capacity() {
                let (ip, port) = c.next_pair().expect("a free pair");
                assert!((PORT_MIN..=PORT_MAX).contains(&(port as u32)));
                assert_eq!((port as u32 - PORT_MIN) % 3, t as u32);
                assert!(seen.insert((ip, port)), "pair handed out twice");
            }
        }
        assert_eq!(seen.len() as u32, 2 * (PORT_MAX - PORT_MIN + 1));
    }

    #[test]
    fn busy_pairs_are_skipped_even_after_wrapping() {
        let ip = Ipv4Addr::LOCALHOST;
        let first = PORT_MIN as u16;
        let busy: BusyPairs = [(ip, first), (ip, first + 2)].into_iter().collect();
        assert_eq!(
            free_pairs(&[ip], &busy),
            (PORT_MAX - PORT_MIN + 1) as u64 - 2
        );
        let mut c = PortCursor::new(vec![ip], 0, 1, Arc::new(busy));
        assert_eq!(c.next_pair(), Some((ip, first + 1)));
        assert_eq!(c.next_pair(), Some((ip, first + 3)));
        for _ in 0..c.capacity() {
            let p = c.next_pair().expect("free pair");
            assert!(p != (ip, first) && p != (ip, first + 2));
        }
        let all: BusyPairs = (PORT_MIN..=PORT_MAX).map(|p| (ip, p as u16)).collect();
        assert_eq!(
            PortCursor::new(vec![ip], 0, 1, Arc::new(all)).next_pair(),
            None
        );
    }
}
