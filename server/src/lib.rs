//! stentor: a Server-Sent Events edge server for Linux on io_uring.
//!
//! The crate is layered so the hot path stays both fast and testable:
//! - [`wire`]: pure encoders and parsers (SSE frames, HTTP/1.1), no I/O;
//! - [`hub`]: topics, ids, history and who gets which frame, no I/O;
//! - [`api`]: the request policy (routes, authorization, CORS, publish
//!   bodies, every status), decided from a request's head, no I/O;
//! - [`bus`]: the publish state workers share (ids, history, inboxes) and
//!   every publish refusal;
//! - [`ring`], [`conn`], [`worker`]: the io_uring loop that moves bytes and
//!   asks the pure layers what to do; [`node`]: the control plane that
//!   starts and stops it; [`sys`]: the raw system calls outside the ring;
//! - [`broker`]: the fleet mode's Redis client and its reader and publisher
//!   threads, off the workers' rings;
//! - [`admin`]: `/metrics`, `/readyz`, `/healthz`, also on `--admin-listen`;
//! - [`history_file`]: `--history-file`, history across restarts and upgrades;
//! - [`config`], [`limit`], [`log`], [`metrics`]: every knob with its limit,
//!   the node-wide limits, structured logs, and the counters that show each
//!   limit biting.

pub mod admin;
pub mod api;
pub mod broker;
pub mod bus;
pub mod config;
pub mod conn;
pub mod history_file;
pub mod hub;
pub mod limit;
pub mod log;
pub mod metrics;
pub mod node;
pub mod ring;
pub mod sys;
pub mod wire;
pub mod worker;
