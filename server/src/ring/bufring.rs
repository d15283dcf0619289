//! The worker's provided-buffer ring: a pool of receive buffers the kernel
//! picks from when data arrives on any connection's multishot recv. An idle
//! connection therefore pins no read buffer; a buffer is held only between
//! its completion and [`BufRing::give_back`], which the worker calls as soon
//! as it has copied the bytes out.

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
    /// Our copy of the tail; published to the kernel with a release store.
    tail: u16,
    group: u16,
}

// The raw pointers are only touched by the worker thread that owns the ring.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Map and register `BUFS_PER_RING` buffers as group `group`, all of them
    /// handed to the kernel.
    pub fn new(submitter: &Submitter<'_>, group: u16) -> io::Result<BufRing> {
        const _: () = assert!(BUFS_PER_RING.is_power_of_two());
        let entries_len = usize::from(BUFS_PER_RING) * std::mem::size_of::<BufRingEntry>();
        let entries = Mapping::new(entries_len)?;
        let bufs = Mapping::new(usize::from(BUFS_PER_RING) * BUF_BYTES as usize)?;
        // SAFETY: the mapping is page aligned, sized for BUFS_PER_RING entries
        // and lives as long as this BufRing, which outlives the registration.
        unsafe {
            submitter.register_buf_ring_with_flags(entries.ptr as u64, BUFS_PER_RING, group, 0)?;
        }
        let mut ring = BufRing {
            entries,
            bufs,
            tail: 0,
            group,
        };
        for bid in 0..BUFS_PER_RING {
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
        assert!(bid < BUFS_PER_RING, "buffer id {bid} out of range");
        let len = len.min(BUF_BYTES as usize);
        // SAFETY: bid is in range, so the slice lies inside `bufs`; the kernel
        // does not write a buffer between its completion and give_back.
        unsafe {
            std::slice::from_raw_parts(
                self.bufs.ptr.add(usize::from(bid) * BUF_BYTES as usize),
                len,
            )
        }
    }

    /// Hand buffer `bid` back to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        assert!(bid < BUFS_PER_RING, "buffer id {bid} out of range");
        self.push(bid);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        let index = usize::from(self.tail & (BUFS_PER_RING - 1));
        // SAFETY: index < BUFS_PER_RING, inside the entries mapping; the
        // kernel only reads entries between its head and our published tail.
        unsafe {
            let entry = &mut *(self.entries.ptr as *mut BufRingEntry).add(index);
            entry.set_addr(self.bufs.ptr.add(usize::from(bid) * BUF_BYTES as usize) as u64);
            entry.set_len(BUF_BYTES);
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
