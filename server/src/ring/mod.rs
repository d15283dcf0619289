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
