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
pub fn open_socket(v6: bool, source: Option<SocketAddr>, slow: bool) -> Result<i32, String> {
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
