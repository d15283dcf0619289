//! Topics, ids, history and who gets which frame. Pure: no I/O, no clocks.
//!
//! - [`topic`]: what a topic may be called, and a shared name handle;
//! - [`id`]: the node's id sequence and where a resuming client starts;
//! - [`history`]: one topic's ring of encoded frames, bounded by count and bytes;
//! - [`publish`]: a validated event to publish, and why a publish is refused;
//! - [`Hub`]: the publishing side of a node, tying them together.
//!
//! See `docs/design/architecture.md` for the formats and the resume cases.

pub mod history;
pub mod id;
pub mod index;
pub mod persist;
pub mod publish;
mod state;
pub mod topic;

pub use state::{
    missed_notice, Hub, HubLimits, HubStats, MissedReason, Published, Replay, ReplaySnapshot,
    MISSED_EVENT_TYPE, REPLAY_EVENTS_MAX_DEFAULT, TOPICS_MAX_DEFAULT,
};
