//! stentor: a Server-Sent Events edge server for Linux on io_uring.
//!
//! The crate is layered so the hot path stays both fast and testable:
//! - [`wire`]: pure encoders and parsers (SSE frames, HTTP/1.1), no I/O;
//! - [`hub`]: topics, ids, history and who gets which frame, no I/O;
//! - [`ring`], [`conn`], [`worker`], [`node`]: the io_uring loop that moves
//!   bytes and asks the pure layers what to do;
//! - [`broker`]: the fleet mode's Redis client and its reader and publisher
//!   threads, off the workers' rings;
//! - [`config`], [`limit`], [`log`], [`metrics`]: every knob with its limit,
//!   the node-wide limits, structured logs, and the counters that show each
//!   limit biting.

pub mod broker;
pub mod config;
pub mod conn;
pub mod hub;
pub mod limit;
pub mod log;
pub mod metrics;
pub mod node;
pub mod ring;
pub mod wire;
pub mod worker;
