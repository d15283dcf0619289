//! What only the loadgen needs outside the ring: creating and binding a
//! client socket before it goes into the fixed table, and errno names for
//! counters. Everything generic (socket options and addresses, rlimits,
//! rusage, /proc/stat) is `stentor::sys`, shared with the server and bench.

use std::io;
use std::net::SocketAddr;

use stentor::sys::{setsockopt_int, sockaddr_of};

/// Receive buffer asked for on slow subscribers, so the server sees them fall behind quickly.
pub const SLOW_RCVBUF_BYTES: i32 = 4096;

/// A short name for an errno, used as a counter key.
pub fn errno_name(e: i32) -> String {
    let s = match e {
        libc::ECONNREFUSED => "econnrefused",
        libc::ECONNRESET => "econnreset",
        libc::ETIMEDOUT => "etimedout",
        libc::EADDRNOTAVAIL => "eaddrnotavail",
        libc::EADDRINUSE => "eaddrinuse",
        libc::ENETUNREACH => "enetunreach",
        libc::EHOSTUNREACH => "ehostunreach",
        libc::EPIPE => "epipe",
        libc::ECANCELED => "ecanceled",
        libc::EMFILE => "emfile",
        libc::ENFILE => "enfile",
        libc::ENOBUFS => "enobufs",
        libc::ENOMEM => "enomem",
        libc::EINVAL => "einval",
        libc::EBADF => "ebadf",
        _ => return format!("errno_{e}"),
    };
    s.to_string()
}

/// A TCP socket of the server's family (IPv4 or IPv6), bound to `source`
/// when given (same family: the caller checked), with a small receive
/// buffer for slow subscribers. Errors are counter keys.
/// A TCP socket for one connect attempt: a small receive buffer
/// when `slow`, the kernel's receive timestamps on its segments when
/// `timestamps`, bound to `source` when given.
pub fn open_socket(
    v6: bool,
    source: Option<SocketAddr>,
    slow: bool,
    timestamps: bool,
) -> Result<i32, String> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket syscalls on a descriptor we own; closed on error.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket_{}", errno_name(errno())));
        }
        let fail = |what: &str| {
            let e = errno();
            libc::close(fd);
            Err(format!("{what}_{}", errno_name(e)))
        };
        if slow {
            let v: libc::c_int = SLOW_RCVBUF_BYTES;
            if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, v).is_err() {
                return fail("rcvbuf");
            }
        }
        if timestamps && setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).is_err() {
            return fail("timestamps");
        }
        if let Some(source) = source {
            // Reuse lets a pair whose old connection sits in TIME_WAIT be
            // bound again after the cursor wraps.
            if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).is_err() {
                return fail("reuseaddr");
            }
            let (sa, len) = sockaddr_of(source);
            let rc = libc::bind(
                fd,
                &sa as *const libc::sockaddr_storage as *const libc::sockaddr,
                len,
            );
            if rc != 0 {
                return fail("bind");
            }
        }
        Ok(fd)
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// CPU seconds (user + system) this thread has used.
pub fn thread_cpu_s() -> f64 {
    stentor::sys::cpu_seconds(libc::RUSAGE_THREAD)
}

/// CPU seconds (user + system) the whole process has used.
pub fn process_cpu_s() -> f64 {
    stentor::sys::cpu_seconds(libc::RUSAGE_SELF)
}

/// Room for one `SCM_TIMESTAMPNS` control message (`CMSG_SPACE` of a timespec).
pub const TIMESTAMP_CONTROL_BYTES: usize = 32;

/// The kernel receive time (CLOCK_REALTIME, ns) in the control data of a
/// multishot recvmsg, if it carries one.
pub fn receive_timestamp_ns(control: &[u8]) -> Option<u64> {
    const HEADER: usize = std::mem::size_of::<libc::cmsghdr>();
    let mut at = 0;
    while control.len() >= at + HEADER {
        // SAFETY: HEADER bytes are in bounds; read_unaligned copies them.
        let h: libc::cmsghdr = unsafe {
            control
                .as_ptr()
                .add(at)
                .cast::<libc::cmsghdr>()
                .read_unaligned()
        };
        let len = h.cmsg_len;
        if len < HEADER || at + len > control.len() {
            return None;
        }
        if h.cmsg_level == libc::SOL_SOCKET
            && h.cmsg_type == libc::SCM_TIMESTAMPNS
            && len >= HEADER + std::mem::size_of::<libc::timespec>()
        {
            // SAFETY: a timespec's bytes follow the header, in bounds (len).
            let ts: libc::timespec = unsafe {
                control
                    .as_ptr()
                    .add(at + HEADER)
                    .cast::<libc::timespec>()
                    .read_unaligned()
            };
            return u64::try_from(ts.tv_sec)
                .ok()
                .map(|s| s * 1_000_000_000 + ts.tv_nsec as u64);
        }
        at += len.next_multiple_of(std::mem::size_of::<usize>());
    }
    None
}

/// CLOCK_REALTIME now, in ns (the clock receive timestamps are taken on).
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `recv` on a blocking socket that has SO_TIMESTAMPNS set, with the
/// kernel's receive time of the last segment read (CLOCK_REALTIME, ns) when
/// it came with the bytes.
pub fn recv_timestamped(fd: i32, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    let mut control = [0u64; TIMESTAMP_CONTROL_BYTES / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the iovec and control buffer it
    // points at live across the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = TIMESTAMP_CONTROL_BYTES as _;
    // SAFETY: fd is a socket the caller owns; msg is set up above.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let used = (msg.msg_controllen as usize).min(TIMESTAMP_CONTROL_BYTES);
    // SAFETY: the kernel wrote `used` bytes of control data into `control`.
    let bytes = unsafe { std::slice::from_raw_parts(control.as_ptr().cast::<u8>(), used) };
    Ok((n as usize, receive_timestamp_ns(bytes)))
}

/// Turn a kernel receive time (CLOCK_REALTIME) into `now_ns`'s clock by
/// its age now; `now_ns` when there is none.
pub fn arrival_ns(now_ns: u64, received_realtime_ns: Option<u64>) -> u64 {
    match received_realtime_ns {
        Some(ts) => now_ns.saturating_sub(realtime_ns().saturating_sub(ts)),
        None => now_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Control data as the kernel lays it out: header, data, padding to
    /// the next `usize`.
    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let header = std::mem::size_of::<libc::cmsghdr>();
        // SAFETY: an all-zero cmsghdr is a valid value.
        let mut h: libc::cmsghdr = unsafe { std::mem::zeroed() };
        h.cmsg_len = (header + data.len()) as _;
        h.cmsg_level = level;
        h.cmsg_type = kind;
        // SAFETY: viewing a plain C struct as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&h as *const libc::cmsghdr).cast::<u8>(), header)
        };
        let mut v = bytes.to_vec();
        v.extend_from_slice(data);
        v.resize(v.len().next_multiple_of(std::mem::size_of::<usize>()), 0);
        v
    }

    fn timespec(s: i64, ns: i64) -> Vec<u8> {
        [s.to_ne_bytes(), ns.to_ne_bytes()].concat()
    }

    #[test]
    fn finds_the_receive_timestamp_among_control_messages() {
        let ts = cmsg(
            libc::SOL_SOCKET,
            libc::SCM_TIMESTAMPNS,
            &timespec(1_700_000_000, 5),
        );
        assert_eq!(receive_timestamp_ns(&ts), Some(1_700_000_000_000_000_005));
        // After another message.
        let mut two = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0, 0, 0, 0]);
        two.extend(&ts);
        assert_eq!(receive_timestamp_ns(&two), Some(1_700_000_000_000_000_005));
        // None there, truncated, a length that overruns or underruns.
        assert_eq!(receive_timestamp_ns(&[]), None);
        assert_eq!(receive_timestamp_ns(&ts[..20]), None);
        assert_eq!(
            receive_timestamp_ns(&cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &[0; 4])),
            None
        );
        let mut bad = ts.clone();
        bad[0] = 200;
        assert_eq!(receive_timestamp_ns(&bad), None);
        bad[..8].copy_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(receive_timestamp_ns(&bad), None);
        // A negative time is no timestamp.
        let neg = cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &timespec(-1, 0));
        assert_eq!(receive_timestamp_ns(&neg), None);
    }

    #[test]
    fn the_realtime_clock_is_the_epoch_clock() {
        let now = realtime_ns();
        // 2020-01-01 .. 2100-01-01
        assert!((1_577_836_800_000_000_000..4_102_444_800_000_000_000).contains(&now));
    }
}
