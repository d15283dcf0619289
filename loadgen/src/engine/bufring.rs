//! A provided-buffer ring: the kernel picks a buffer for each multishot recv
//! completion, so idle subscribers pin no read buffer at all. The buffers
//! are handed back right after their bytes are parsed.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

pub struct BufRing {
    ring_ptr: *mut BufRingEntry,
    ring_bytes: usize,
    entries: u16,
    buf_bytes: usize,
    bufs: Vec<u8>,
    tail: u16,
    bgid: u16,
}

impl BufRing {
    /// Register `entries` (a power of two) buffers of `buf_bytes` as group `bgid`.
    pub fn new(ring: &IoUring, bgid: u16, entries: u16, buf_bytes: usize) -> io::Result<Self> {
        assert!(
            entries.is_power_of_two(),
            "buffer ring size must be a power of two"
        );
        let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        // SAFETY: anonymous private mapping, checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut me = Self {
            ring_ptr: ptr.cast(),
            ring_bytes,
            entries,
            buf_bytes,
            bufs: vec![0u8; entries as usize * buf_bytes],
            tail: 0,
            bgid,
        };
        // SAFETY: the mapping lives as long as `me`, which the engine drops
        // after the ring (field order), so the kernel never sees it unmapped.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ptr as u64, entries, bgid, 0)?
        };
        for bid in 0..entries {
            me.push(bid);
        }
        me.publish();
        Ok(me)
    }

    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// The bytes the kernel put in buffer `bid`.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        debug_assert!(bid < self.entries && len <= self.buf_bytes);
        let start = bid as usize * self.buf_bytes;
        &self.bufs[start..start + len.min(self.buf_bytes)]
    }

    /// Give buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        let idx = (self.tail & (self.entries - 1)) as usize;
        let addr = self.bufs.as_mut_ptr() as u64 + (bid as usize * self.buf_bytes) as u64;
        // SAFETY: idx < entries, within the mapping.
        let entry = unsafe { &mut *self.ring_ptr.add(idx) };
        entry.set_addr(addr);
        entry.set_len(self.buf_bytes as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's reserved field,
        // which the kernel reads; a release store orders the entries before it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring_ptr) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: mapping created in `new` with this length.
        unsafe {
            libc::munmap(self.ring_ptr.cast(), self.ring_bytes);
        }
    }
}
