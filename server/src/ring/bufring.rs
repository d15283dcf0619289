//! The worker's provided-buffer ring: a pool of receive buffers the kernel
//! picks from when data arrives on any connection's multishot recv. An idle
//! connection therefore pins no read buffer; a buffer is held only between
//! its completion and [`BufRing::give_back`], which the worker calls as soon
//! as it has copied the bytes out.
//!
//! The load generator uses the same ring for its subscribers, with its own
//! buffer count and size; the server's are [`BUFS_PER_RING`] × [`BUF_BYTES`].

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// Buffers in one worker's ring (a power of two, as the kernel requires).
/// 256 × 2 KiB = 512 KiB per worker whatever the connection count: enough
/// for a burst of requests in one batch; a recv that finds the ring empty
/// ends with ENOBUFS and is re-armed.
pub const BUFS_PER_RING: u16 = 256;
/// Bytes per buffer: a typical request head fits in one; larger heads span
/// several completions and are reassembled in the connection's read buffer.
pub const BUF_BYTES: u32 = 2048;
const _: () = assert!(BUFS_PER_RING.is_power_of_two());

/// An anonymous mapping, page aligned as the buffer ring needs.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: anonymous private mapping, no file; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from a successful mmap and are unmapped once.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A registered buffer ring. Must be dropped after the io_uring it is
/// registered with (the worker declares the ring first so it is).
pub struct BufRing {
    entries: Mapping,
    bufs: Mapping,
    /// Buffers in the ring (a power of two), and bytes per buffer.
    count: u16,
    buf_bytes: u32,
    /// Our copy of the tail; published to the kernel with a release store.
    tail: u16,
    group: u16,
}

// The raw pointers are only touched by the worker thread that owns the ring.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Map and register `count` buffers of `buf_bytes` each as group
    /// `group`, all of them handed to the kernel. `count` must be a power of
    /// two (the kernel masks the tail with `count - 1`); the server passes
    /// [`BUFS_PER_RING`] and [`BUF_BYTES`].
    pub fn new(
        submitter: &Submitter<'_>,
        group: u16,
        count: u16,
        buf_bytes: u32,
    ) -> io::Result<BufRing> {
        assert!(
            count.is_power_of_two(),
            "buffer ring size {count} must be a power of two"
        );
        assert!(buf_bytes > 0, "buffer ring buffers must not be empty");
        let entries_len = usize::from(count) * std::mem::size_of::<BufRingEntry>();
        let entries = Mapping::new(entries_len)?;
        let bufs_len = usize::from(count)
            .checked_mul(buf_bytes as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large"))?;
        let bufs = Mapping::new(bufs_len)?;
        // SAFETY: the mapping is page aligned, sized for `count` entries
        // and lives as long as this BufRing, which outlives the registration.
        unsafe {
            submitter.register_buf_ring_with_flags(entries.ptr as u64, count, group, 0)?;
        }
        let mut ring = BufRing {
            entries,
            bufs,
            count,
            buf_bytes,
            tail: 0,
            group,
        };
        for bid in 0..count {
            ring.push(bid);
        }
        ring.publish();
        Ok(ring)
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    /// The bytes the kernel put in buffer `bid`.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count, "buffer id {bid} out of range");
        // The kernel never reports more than the buffer's length.
        debug_assert!(len <= self.buf_bytes as usize, "recv of {len} bytes");
        let len = len.min(self.buf_bytes as usize);
        // SAFETY: bid is in range, so the slice lies inside `bufs`; the kernel
        // does not write a buffer between its completion and give_back.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(bid), len) }
    }

    /// Hand buffer `bid` back to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        assert!(bid < self.count, "buffer id {bid} out of range");
        self.push(bid);
        self.publish();
    }

    /// Start of buffer `bid`; the caller has checked `bid < count`.
    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        debug_assert!(bid < self.count);
        // SAFETY: bid < count, so the offset lies inside `bufs`.
        unsafe {
            self.bufs
                .ptr
                .add(usize::from(bid) * self.buf_bytes as usize)
        }
    }

    fn push(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        let addr = self.buf_ptr(bid) as u64;
        // SAFETY: index < count, inside the entries mapping; the
        // kernel only reads entries between its head and our published tail.
        unsafe {
            let entry = &mut *(self.entries.ptr as *mut BufRingEntry).add(index);
            entry.set_addr(addr);
            entry.set_len(self.buf_bytes);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays entry 0's `resv`, inside the mapping;
        // the kernel reads it with an acquire load.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.ptr as *const BufRingEntry) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::{cqueue, opcode, types, IoUring};
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// Recv completions waited for per round: each round sends one message.
    const ROUNDS: usize = 12;

    /// A ring of a size other than the server's (as the load generator
    /// makes): every recv lands in one of its buffers, a buffer handed back
    /// is picked again, and the tail wraps past `count` without losing one.
    #[test]
    fn small_ring_recycles_buffers_past_its_size() {
        const COUNT: u16 = 4;
        const BYTES: u32 = 64;
        let mut ring = IoUring::new(8).expect("io_uring on this machine");
        let mut bufs = BufRing::new(&ring.submitter(), 7, COUNT, BYTES).expect("buffer ring");
        assert_eq!(bufs.group(), 7);
        let (mut tx, rx) = UnixStream::pair().expect("socketpair");
        let mut seen = [false; COUNT as usize];
        for round in 0..ROUNDS {
            let msg = format!("message {round}");
            tx.write_all(msg.as_bytes()).expect("send");
            let recv = opcode::Recv::new(types::Fd(rx.as_raw_fd()), std::ptr::null_mut(), BYTES)
                .buf_group(bufs.group())
                .build()
                .flags(io_uring::squeue::Flags::BUFFER_SELECT)
                .user_data(round as u64);
            // SAFETY: the buffer ring outlives the op, which completes below.
            unsafe { ring.submission().push(&recv).expect("sq space") };
            ring.submit_and_wait(1).expect("submit");
            let cqe = ring.completion().next().expect("one completion");
            assert_eq!(cqe.result(), msg.len() as i32, "round {round}");
            let bid = cqueue::buffer_select(cqe.flags()).expect("a provided buffer");
            assert!(bid < COUNT);
            seen[usize::from(bid)] = true;
            assert_eq!(bufs.get(bid, cqe.result() as usize), msg.as_bytes());
            bufs.give_back(bid);
        }
        assert!(seen.iter().all(|&s| s), "every buffer was used: {seen:?}");
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn refuses_a_count_that_is_not_a_power_of_two() {
        let ring = IoUring::new(8).expect("io_uring on this machine");
        let _ = BufRing::new(&ring.submitter(), 0, 3, 64);
    }
}
