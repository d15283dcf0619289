//! The machine's loopback `send()` ceiling: what a plain loop of one
//! `send()` per event per socket reaches over N loopback TCP pairs, with no
//! HTTP, no queues and no io_uring. `stentor-ceiling` runs it; `just bench`
//! and `docs/measurements/performance.md` express stentor's figures as a fraction of it.
//!
//! Shape: the measuring process holds the sending side of every pair (the
//! accepted sockets, like a server), a child process holds the receiving side
//! and drains it with epoll. Two processes because each one is capped at
//! 20000 descriptors: N pairs are 2N descriptors, one process could hold
//! fewer than 10,000 pairs.
//!
//! This module holds the socket plumbing and the report; the bin drives it.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Descriptors a side keeps for itself (listener, epoll, pipes, stdio).
pub const FDS_RESERVED: u64 = 100;

/// Send buffer set on the sending sockets: the same 64 KiB stentor's
/// listeners set (`SOCKET_SEND_BUFFER_BYTES`), so both face the same kernel
/// buffering.
pub const SEND_BUFFER_BYTES: libc::c_int = 64 * 1024;

/// Source ports the receiver binds to, per source address: explicit ports
/// avoid the kernel's quadratic port search for many connections from one
/// address to one server port.
pub const SOURCE_PORT_FIRST: u16 = 20_000;
pub const SOURCE_PORTS_PER_ADDR: u32 = 40_000;
/// Port candidates tried past one in use (another process's) before giving up.
pub const BIND_ATTEMPTS_MAX: u32 = 200;

// The system calls shared with the server and the load generator.
pub use stentor::sys::{busy_share, cpu_seconds, machine_jiffies, raise_nofile};

/// Most pairs one run can hold: each side holds one descriptor per pair.
pub fn pairs_max(nofile: u64) -> u64 {
    nofile.saturating_sub(FDS_RESERVED)
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: an int option, its size passed alongside.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Options every sending socket gets, set on the listener so accepted
/// sockets inherit them (as stentor does): 64 KiB send buffer, no Nagle.
pub fn configure_sender_listener(fd: RawFd, backlog: libc::c_int) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, SEND_BUFFER_BYTES)?;
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    // std listens with a small backlog; a burst of 20k connects needs more.
    check(unsafe { libc::listen(fd, backlog) }).map(|_| ())
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(|_| ())
}

fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// The source address and first port candidate of receiving socket `i`:
/// 127.77.<salt>.<1 + i / ports per address>, so concurrent runs (different
/// salts) and the loadgen (127.0.0.x) stay out of each other's way.
pub fn source_of(i: u32, salt: u8) -> SocketAddrV4 {
    let host = 1 + (i / SOURCE_PORTS_PER_ADDR) as u8;
    let port = SOURCE_PORT_FIRST + (i % SOURCE_PORTS_PER_ADDR) as u16;
    SocketAddrV4::new(Ipv4Addr::new(127, 77, salt, host), port)
}

/// A blocking connect from `source` (trying the next ports when one is
/// taken) to `server`; the socket is returned non-blocking.
pub fn connect_from(source: SocketAddrV4, server: SocketAddrV4) -> io::Result<OwnedFd> {
    // SAFETY: socket() returns a new descriptor we wrap at once.
    let raw =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let mut bound = false;
    let mut last_error = None;
    for attempt in 0..BIND_ATTEMPTS_MAX {
        let port = source
            .port()
            .wrapping_add((attempt * 7919) as u16)
            .max(1024);
        let local = sockaddr_in(SocketAddrV4::new(*source.ip(), port));
        // SAFETY: a sockaddr_in and its size.
        let ret = unsafe {
            libc::bind(
                raw,
                (&local as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if ret == 0 {
            bound = true;
            break;
        }
        last_error = Some(io::Error::last_os_error());
    }
    if !bound {
        return Err(last_error.unwrap_or_else(|| io::Error::other("bind failed")));
    }
    let remote = sockaddr_in(server);
    check(unsafe {
        libc::connect(
            raw,
            (&remote as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    set_nonblocking(raw)?;
    Ok(fd)
}

/// What one sender thread did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendTally {
    /// `send()` calls that moved at least one byte.
    pub sends: u64,
    pub bytes: u64,
    /// Calls refused with EAGAIN (the peer's buffers were full).
    pub would_block: u64,
    /// Calls that moved fewer bytes than asked.
    pub partial: u64,
    /// Calls that failed otherwise (the peer went away).
    pub errors: u64,
    /// Passes over this thread's sockets.
    pub rounds: u64,
}

impl SendTally {
    pub fn add(&mut self, other: SendTally) {
        self.sends += other.sends;
        self.bytes += other.bytes;
        self.would_block += other.would_block;
        self.partial += other.partial;
        self.errors += other.errors;
        self.rounds += other.rounds;
    }
}

/// The sending loop: one `send()` of `message` to each socket in turn, pass
/// after pass, until `deadline`. Non-blocking: a full socket is skipped (and
/// counted), never waited on, so one slow receiver does not stall the loop.
pub fn send_loop(fds: &[RawFd], message: &[u8], deadline: Instant) -> SendTally {
    let mut tally = SendTally::default();
    while Instant::now() < deadline {
        for &fd in fds {
            // SAFETY: a buffer we own, its length; the fd stays open for the loop.
            let ret = unsafe {
                libc::send(
                    fd,
                    message.as_ptr().cast(),
                    message.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if ret > 0 {
                tally.sends += 1;
                tally.bytes += ret as u64;
                if (ret as usize) < message.len() {
                    tally.partial += 1;
                }
            } else {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) => tally.would_block += 1,
                    _ => tally.errors += 1,
                }
            }
        }
        tally.rounds += 1;
    }
    tally
}

/// Bytes one `recv()` may take: large, so a backlog drains in few calls.
pub const RECV_BUFFER_BYTES: usize = 256 * 1024;
/// Reads per readable socket per wake-up before moving on (fairness).
pub const READS_PER_WAKEUP_MAX: usize = 8;
/// Events one `epoll_wait` returns at most.
pub const EPOLL_EVENTS_MAX: usize = 1024;

/// The receiving side: an epoll set over every socket, drained until told
/// to stop.
pub struct Receiver {
    epoll: OwnedFd,
    fds: Vec<OwnedFd>,
    buf: Vec<u8>,
    events: Vec<libc::epoll_event>,
    pub bytes: u64,
    pub eofs: u64,
}

impl Receiver {
    pub fn new(fds: Vec<OwnedFd>) -> io::Result<Receiver> {
        let raw = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: a fresh descriptor we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        for fd in &fds {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: fd.as_raw_fd() as u64,
            };
            check(unsafe {
                libc::epoll_ctl(raw, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut event)
            })?;
        }
        Ok(Receiver {
            epoll,
            fds,
            buf: vec![0; RECV_BUFFER_BYTES],
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS_MAX],
            bytes: 0,
            eofs: 0,
        })
    }

    pub fn sockets(&self) -> usize {
        self.fds.len()
    }

    /// Wait up to `timeout` and drain what is readable; returns how many
    /// sockets were readable (0 = nothing arrived in `timeout`).
    pub fn poll(&mut self, timeout: Duration) -> io::Result<usize> {
        let ready = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                EPOLL_EVENTS_MAX as libc::c_int,
                timeout.as_millis().min(i32::MAX as u128) as libc::c_int,
            )
        };
        if ready < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(error)
            };
        }
        for i in 0..ready as usize {
            let fd = self.events[i].u64 as RawFd;
            for _ in 0..READS_PER_WAKEUP_MAX {
                // SAFETY: our buffer and its length.
                let n = unsafe {
                    libc::recv(
                        fd,
                        self.buf.as_mut_ptr().cast(),
                        self.buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n > 0 {
                    self.bytes += n as u64;
                    if (n as usize) < self.buf.len() {
                        break;
                    }
                } else {
                    if n == 0 {
                        self.eofs += 1;
                        // Stop watching it: a closed peer stays readable forever.
                        unsafe {
                            libc::epoll_ctl(
                                self.epoll.as_raw_fd(),
                                libc::EPOLL_CTL_DEL,
                                fd,
                                std::ptr::null_mut(),
                            );
                        }
                    }
                    break;
                }
            }
        }
        Ok(ready as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn source_addresses_spread_over_hosts_and_ports() {
        let a = source_of(0, 9);
        assert_eq!(
            a,
            SocketAddrV4::new(Ipv4Addr::new(127, 77, 9, 1), SOURCE_PORT_FIRST)
        );
        let b = source_of(SOURCE_PORTS_PER_ADDR, 9);
        assert_eq!(b.ip(), &Ipv4Addr::new(127, 77, 9, 2));
        assert_eq!(b.port(), SOURCE_PORT_FIRST);
        assert_eq!(source_of(SOURCE_PORTS_PER_ADDR - 1, 9).port(), 59_999);
    }

    #[test]
    fn pairs_send_and_the_receiver_counts_every_byte() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        configure_sender_listener(listener.as_raw_fd(), 64).expect("listener options");
        let server = match listener.local_addr().expect("addr") {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("not v4: {other}"),
        };
        let salt = (std::process::id() % 250) as u8;
        let pairs = 4;
        let mut receivers = Vec::new();
        let mut senders = Vec::new();
        for i in 0..pairs {
            receivers.push(connect_from(source_of(i + 1000, salt), server).expect("connect"));
            let (stream, _) = listener.accept().expect("accept");
            stream.set_nonblocking(true).expect("nonblocking");
            senders.push(stream);
        }
        let fds: Vec<RawFd> = senders.iter().map(|s| s.as_raw_fd()).collect();
        let tally = send_loop(
            &fds,
            &[b'x'; 100],
            Instant::now() + Duration::from_millis(20),
        );
        assert!(
            tally.sends >= pairs as u64 && tally.rounds >= 1,
            "{tally:?}"
        );
        assert_eq!(tally.errors, 0);
        let mut receiver = Receiver::new(receivers).expect("epoll");
        let deadline = Instant::now() + Duration::from_secs(10);
        while receiver.bytes < tally.bytes && Instant::now() < deadline {
            receiver.poll(Duration::from_millis(50)).expect("poll");
        }
        assert_eq!(receiver.bytes, tally.bytes);
        assert_eq!(receiver.sockets(), pairs as usize);
    }
}
