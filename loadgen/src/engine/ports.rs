//! Source (address, port) pairs chosen by us instead of the kernel.
//!
//! Why: for many connections from one address to one server port, the
//! kernel's connect() walks the ports already taken from the same starting
//! offset each time, which is quadratic: measured here, 40k connections over
//! two addresses cost 15 s of system time, 72% in `__inet_check_established`.
//! Binding an explicit, unused port makes each connect O(1). Threads take
//! disjoint ports (port ≡ thread mod threads) so they never race for one.

use std::net::Ipv4Addr;

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
}

impl PortCursor {
    pub fn new(ips: Vec<Ipv4Addr>, thread: usize, threads: usize) -> Self {
        assert!(!ips.is_empty() && threads > 0 && thread < threads);
        Self {
            ips,
            thread: thread as u32,
            threads: threads as u32,
            next: 0,
        }
    }

    /// Pairs this thread owns: every address for each of its ports.
    pub fn capacity(&self) -> u64 {
        let ports = (PORT_MAX - PORT_MIN + 1 - self.thread).div_ceil(self.threads) as u64;
        ports * self.ips.len() as u64
    }

    /// The next pair, cycling through addresses first so they fill evenly;
    /// wraps around after [`Self::capacity`] (old ports are free by then, or
    /// bind says so and the caller takes the next).
    pub fn next_pair(&mut self) -> (Ipv4Addr, u16) {
        let cap = self.capacity();
        let i = self.next % cap;
        self.next += 1;
        let k = self.ips.len() as u64;
        let ip = self.ips[(i % k) as usize];
        let port = PORT_MIN + self.thread + self.threads * (i / k) as u32;
        debug_assert!(port <= PORT_MAX);
        (ip, port as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_never_share_a_pair_and_ports_stay_in_range() {
        let ips = vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
        let mut seen = std::collections::HashSet::new();
        for t in 0..3 {
            let mut c = PortCursor::new(ips.clone(), t, 3);
            for _ in 0..c.capacity() {
                let (ip, port) = c.next_pair();
                assert!((PORT_MIN..=PORT_MAX).contains(&(port as u32)));
                assert_eq!((port as u32 - PORT_MIN) % 3, t as u32);
                assert!(seen.insert((ip, port)), "pair handed out twice");
            }
        }
        assert_eq!(seen.len() as u32, 2 * (PORT_MAX - PORT_MIN + 1));
    }
}
