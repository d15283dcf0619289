//! The io_uring event loop pieces: tokens (user_data), the send queue,
//! the provided-buffer ring, `SendMsg` storage, and ring setup with the
//! fallbacks and error messages an operator needs.

pub mod bufring;
pub mod msgpool;
pub mod sendq;
pub mod token;

use std::io;

use io_uring::IoUring;

/// Submission queue entries per ring. Every SQE made while handling one
/// batch of completions goes out in one `io_uring_enter`; if a batch makes
/// more, the queue is submitted early and filling goes on (nothing dropped).
pub const SQ_ENTRIES: u32 = 4096;
/// Completion queue entries: 4× the SQ because multishot ops (recv) post many
/// completions per SQE. Overflow beyond it is kept by the kernel (NODROP).
pub const CQ_ENTRIES: u32 = 16384;

/// Which setup flags the ring got (logged at debug level, and why it matters:
/// DEFER_TASKRUN runs completions only when we wait, so they arrive batched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingMode {
    /// SINGLE_ISSUER + DEFER_TASKRUN + COOP_TASKRUN.
    Deferred,
    /// COOP_TASKRUN only (kernels 5.19).
    Coop,
    /// No optional flags.
    Plain,
}

/// Build a ring on the calling thread (DEFER_TASKRUN requires the thread that
/// creates the ring to be the one that submits), falling back flag by flag on
/// kernels that answer EINVAL.
pub fn build_ring() -> io::Result<(IoUring, RingMode)> {
    let mut last_err = None;
    for mode in [RingMode::Deferred, RingMode::Coop, RingMode::Plain] {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(CQ_ENTRIES);
        match mode {
            RingMode::Deferred => {
                builder
                    .setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_coop_taskrun();
            }
            RingMode::Coop => {
                builder.setup_coop_taskrun();
            }
            RingMode::Plain => {}
        }
        match builder.build(SQ_ENTRIES) {
            Ok(ring) => return Ok((ring, mode)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

/// Submit what `ring` holds and wait for `want` completions (0: do not
/// wait), reaping completions the kernel still holds as deferred task work.
///
/// `IoUring::submit_and_wait(0)` enters without GETEVENTS (unless this
/// ring's own CQ overflowed), so on a DEFER_TASKRUN ring it posts nothing
/// that completed since the last wait.
pub fn submit_and_reap(ring: &mut IoUring, want: usize) -> io::Result<usize> {
    let to_submit = ring.submission().len() as u32;
    let want = u32::try_from(want).unwrap_or(u32::MAX);
    // SAFETY: a plain io_uring_enter on our own ring: no extra argument,
    // the SQEs it submits were pushed with their own safety contracts.
    unsafe {
        ring.submitter().enter::<libc::sigset_t>(
            to_submit,
            want,
            io_uring::EnterFlags::GETEVENTS.bits(),
            None,
        )
    }
}

/// Build a secondary ring: one more fixed-file table for a worker thread
/// that owns several. Its completions must wake the thread while it sleeps
/// on its primary ring, so it has no DEFER_TASKRUN (which would hold them
/// until this ring itself is entered); an eventfd registered on it is read
/// by the primary ring.
pub fn build_secondary_ring() -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    builder.setup_cqsize(CQ_ENTRIES);
    match builder.build(SQ_ENTRIES) {
        Ok(ring) => Ok(ring),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::new(SQ_ENTRIES),
        Err(e) => Err(e),
    }
}

/// Turn a failure to set up io_uring into a message that names the cause
/// and the fix (an operator reads it in a journal; no backtrace helps them).
pub fn unavailable_message(err: &io::Error) -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string());
    match err.raw_os_error() {
        Some(libc::ENOSYS) => format!(
            "io_uring is not available on this kernel (io_uring_setup: ENOSYS); \
             stentor needs Linux 6.0 or newer built with CONFIG_IO_URING ({err})"
        ),
        Some(libc::EPERM) | Some(libc::EACCES) => match sysctl.as_deref() {
            Some("2") => "io_uring is disabled by sysctl kernel.io_uring_disabled=2; \
                 set it to 0 (sysctl -w kernel.io_uring_disabled=0) to run stentor"
                .to_string(),
            Some("1") => "io_uring is restricted by sysctl kernel.io_uring_disabled=1 \
                 to members of the group kernel.io_uring_group; run stentor in that group \
                 or set the sysctl to 0"
                .to_string(),
            _ => format!(
                "io_uring is forbidden for this process ({err}), most likely by a seccomp \
                 profile (container runtimes block it by default); allow io_uring_setup, \
                 io_uring_enter and io_uring_register (e.g. docker run \
                 --security-opt seccomp=<profile allowing them>)"
            ),
        },
        Some(libc::EINVAL) => format!(
            "this kernel's io_uring lacks a feature stentor needs \
             (provided buffer rings, multishot recv, direct descriptors: Linux 6.0+): {err}"
        ),
        Some(libc::ENOMEM) => format!(
            "io_uring could not allocate its rings ({err}); raise the locked-memory limit \
             (ulimit -l) or lower --workers"
        ),
        _ => format!("io_uring setup failed: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_ring_here() {
        let (ring, mode) = build_ring().expect("io_uring on this machine");
        assert!(ring.params().sq_entries() >= SQ_ENTRIES);
        // Linux 6.18 has DEFER_TASKRUN; a fallback here would mean a bug.
        assert_eq!(mode, RingMode::Deferred);
    }

    #[test]
    fn messages_name_cause_and_fix() {
        let m = unavailable_message(&io::Error::from_raw_os_error(libc::ENOSYS));
        assert!(m.contains("ENOSYS") && m.contains("6.0"), "{m}");
        let m = unavailable_message(&io::Error::from_raw_os_error(libc::EPERM));
        assert!(m.contains("io_uring"), "{m}");
    }
}

#[cfg(test)]
mod reap_tests {
    use super::*;
    use io_uring::{opcode, types};
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// The worker's loop enters its primary ring without waiting while
    /// another ring's CQ overflowed; that enter must still run the primary's
    /// deferred task work (DEFER_TASKRUN posts completions only on an enter
    /// with GETEVENTS), or the primary ring's connections, its tick and its
    /// wake-ups stall for as long as the overflow lasts.
    #[test]
    fn an_enter_without_waiting_reaps_deferred_completions() {
        let (mut ring, mode) = build_ring().unwrap();
        assert_eq!(mode, RingMode::Deferred);
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut data = [0u8; 16];
        // SAFETY: `data` lives until the completion checked below.
        unsafe {
            ring.submission()
                .push(
                    &opcode::Recv::new(types::Fd(a.as_raw_fd()), data.as_mut_ptr(), 16)
                        .build()
                        .user_data(7),
                )
                .unwrap();
        }
        submit_and_reap(&mut ring, 0).unwrap();
        assert_eq!(ring.completion().count(), 0, "nothing arrived yet");
        b.write_all(b"hi").unwrap();
        submit_and_reap(&mut ring, 0).unwrap();
        let got: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        assert_eq!(got, vec![(7, 2)], "deferred completion not reaped");
    }
}

#[cfg(test)]
mod chained_wake_tests {
    use super::*;
    use io_uring::{opcode, types};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    /// A thread sleeping on its primary (DEFER_TASKRUN) ring is woken when a
    /// secondary ring completes an op that had to wait (socket data arriving
    /// later), through an eventfd registered on the secondary and read by
    /// the primary. This is what lets one thread own several rings.
    #[test]
    fn a_secondary_ring_wakes_the_primary_through_an_eventfd() {
        let (mut primary, mode) = build_ring().unwrap();
        assert_eq!(mode, RingMode::Deferred);
        let mut secondary = build_secondary_ring().unwrap();
        // SAFETY: plain syscall, checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(efd >= 0);
        secondary.submitter().register_eventfd(efd).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut wake_buf = 0u64;
        let mut data = [0u8; 16];
        // SAFETY: buffers live until the completions checked below.
        unsafe {
            primary
                .submission()
                .push(
                    &opcode::Read::new(types::Fd(efd), (&mut wake_buf as *mut u64).cast(), 8)
                        .build()
                        .user_data(1),
                )
                .unwrap();
            secondary
                .submission()
                .push(
                    &opcode::Recv::new(types::Fd(a.as_raw_fd()), data.as_mut_ptr(), 16)
                        .build()
                        .user_data(2),
                )
                .unwrap();
        }
        secondary.submit().unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            use std::io::Write;
            (&b).write_all(b"hi").unwrap();
            b
        });
        let started = Instant::now();
        let ts = types::Timespec::new().sec(3);
        let args = types::SubmitArgs::new().timespec(&ts);
        let mut woke = false;
        while started.elapsed() < Duration::from_secs(3) && !woke {
            let _ = primary.submitter().submit_with_args(1, &args);
            woke = primary.completion().any(|c| c.user_data() == 1);
        }
        let _b = writer.join().unwrap();
        assert!(woke, "primary ring not woken");
        assert!(started.elapsed() < Duration::from_secs(2));
        let got: Vec<(u64, i32)> = secondary
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        assert_eq!(got, vec![(2, 2)]);
        // SAFETY: closing our eventfd after both rings are done with it.
        drop(secondary);
        drop(primary);
        unsafe { libc::close(efd) };
    }
}
