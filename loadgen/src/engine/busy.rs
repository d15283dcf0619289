//! Source pairs the kernel still holds toward the server, read once before a
//! run so the port cursor never hands them out.
//!
//! Why: the cursor binds each socket to an explicit (address, port) with
//! SO_REUSEADDR, so bind succeeds even when an earlier connection from that
//! pair to the same server is still closing; connect() then finds the
//! 4-tuple taken and fails with EADDRNOTAVAIL. Every run used to start its
//! cursor at the same ports, so a run started within a moment of the previous
//! one ended collided with the previous run's connections: the process has
//! exited, but its io_uring tears its fixed table down asynchronously and the
//! server closes its side when it gets to it, so for a few hundred ms the old
//! 4-tuples sit in ESTABLISHED / FIN_WAIT / CLOSE_WAIT on one side or the
//! other (measured: 3000 subscribers then 1000 at once lost 264 of the 1000).
//! TIME_WAIT is reusable for connect() only where `tcp_tw_reuse` allows it
//! and only once its last timestamp is over a second old, so a young one is
//! as busy as a live connection.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};

/// TCP states from `include/net/tcp_states.h` that matter here.
const TCP_TIME_WAIT: u8 = 6;
/// Length of TIME_WAIT in the kernel (TCP_TIMEWAIT_LEN), seconds.
const TIME_WAIT_S: f64 = 60.0;
/// Age below which a TIME_WAIT entry is not reused by connect() (the kernel
/// wants its timestamp strictly older than the current second; one more
/// second of margin).
const TIME_WAIT_REUSE_AGE_S: f64 = 3.0;

/// (source address, source port) pairs a new connection to the server must not use.
pub type BusyPairs = HashSet<(Ipv4Addr, u16)>;

/// Read the kernel's socket table and the TIME_WAIT reuse setting. A table
/// that cannot be read gives an empty set (the engine still retries a pair
/// that connect() refuses).
pub fn snapshot(servers: &[SocketAddrV4]) -> BusyPairs {
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp") else {
        return BusyPairs::new();
    };
    let tw_reuse = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_tw_reuse")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .unwrap_or(2);
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    parse(&text, servers, tw_reuse, ticks_per_s)
}

/// The pure part of [`snapshot`]: lines of `/proc/net/tcp` to busy pairs.
pub fn parse(text: &str, servers: &[SocketAddrV4], tw_reuse: u8, ticks_per_s: f64) -> BusyPairs {
    let mut busy = BusyPairs::new();
    for line in text.lines().skip(1) {
        let mut f = line.split_whitespace();
        let (Some(_sl), Some(local), Some(remote), Some(state), Some(_q), Some(timer)) =
            (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let (Some(local), Some(remote), Ok(state)) = (
            parse_addr(local),
            parse_addr(remote),
            u8::from_str_radix(state, 16),
        ) else {
            continue;
        };
        if servers.contains(&remote) {
            // Our side of a connection to the server.
            let reusable = state == TCP_TIME_WAIT
                && tw_reusable(tw_reuse, *local.ip(), *remote.ip())
                && time_wait_age_s(timer, ticks_per_s) >= TIME_WAIT_REUSE_AGE_S;
            if !reusable {
                busy.insert((*local.ip(), local.port()));
            }
        } else if servers.contains(&local) && state != TCP_TIME_WAIT && state != 10 {
            // The server's side still closing (CLOSE_WAIT, LAST_ACK): a SYN
            // from that pair would meet it. (10 = LISTEN.)
            busy.insert((*remote.ip(), remote.port()));
        }
    }
    busy
}

/// Whether connect() may take over a TIME_WAIT 4-tuple (`net.ipv4.tcp_tw_reuse`:
/// 0 never, 1 always, 2 loopback only).
fn tw_reusable(setting: u8, local: Ipv4Addr, remote: Ipv4Addr) -> bool {
    match setting {
        1 => true,
        2 => local.is_loopback() && remote.is_loopback(),
        _ => false,
    }
}

/// Seconds a TIME_WAIT entry has existed, from its `tr:when` column (timer 3,
/// clock ticks left of the 60 s); 0 when the column says otherwise.
fn time_wait_age_s(timer: &str, ticks_per_s: f64) -> f64 {
    let Some((kind, left)) = timer.split_once(':') else {
        return 0.0;
    };
    match (kind, u64::from_str_radix(left, 16)) {
        ("03", Ok(left)) => (TIME_WAIT_S - left as f64 / ticks_per_s).max(0.0),
        _ => 0.0,
    }
}

/// `0100007F:2710` (address as the kernel's u32 in host order, port) to an address.
fn parse_addr(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(a: [u8; 4], port: u16) -> String {
        format!("{:08X}:{port:04X}", u32::from_ne_bytes(a))
    }

    fn line(local: String, remote: String, state: u8, timer: &str) -> String {
        format!("   0: {local} {remote} {state:02X} 00000000:00000000 {timer} 00000000     0        0 0 1")
    }

    #[test]
    fn closing_and_young_time_wait_pairs_are_busy() {
        let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080);
        let s = addr([127, 0, 0, 1], 8080);
        let text = [
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt".into(),
            // Our side established, FIN_WAIT2, young and old TIME_WAIT.
            line(addr([127, 0, 0, 1], 10_000), s.clone(), 1, "00:00000000"),
            line(addr([127, 0, 0, 1], 10_001), s.clone(), 5, "00:00000000"),
            line(addr([127, 0, 0, 2], 10_002), s.clone(), 6, "03:00001700"),
            line(addr([127, 0, 0, 2], 10_003), s.clone(), 6, "03:00000100"),
            // The server's side in CLOSE_WAIT, and its listener.
            line(s.clone(), addr([127, 0, 0, 3], 10_004), 8, "00:00000000"),
            line(s.clone(), addr([0, 0, 0, 0], 0), 10, "00:00000000"),
            // A connection to another server is not ours to worry about.
            line(
                addr([127, 0, 0, 1], 10_005),
                addr([127, 0, 0, 1], 9),
                1,
                "00:00000000",
            ),
        ]
        .join("\n");
        let busy = parse(&text, &[server], 2, 100.0);
        let mut got: Vec<_> = busy.into_iter().collect();
        got.sort();
        let lo = |d: u8, p: u16| (Ipv4Addr::new(127, 0, 0, d), p);
        assert_eq!(
            got,
            vec![lo(1, 10_000), lo(1, 10_001), lo(2, 10_002), lo(3, 10_004)]
        );
        // Where TIME_WAIT is never reused, the old one is busy too.
        assert!(parse(&text, &[server], 0, 100.0).contains(&lo(2, 10_003)));
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80);
        assert!(parse("header\nnot a line\n 0: zz:zz", &[server], 2, 100.0).is_empty());
    }
}
