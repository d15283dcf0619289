//! The io_uring event loop pieces: tokens, submission batching, buffer ring.
