//! The request path's pure decisions, no I/O: who may publish or subscribe
//! to what (JWT keys and claims, where a request carries its token), and
//! which topics a selector or a pattern subscription names.
//!
//! - [`jwt`]: keys from `--jwt-key` and friends, token verification, claims;
//! - [`token_source`]: the token of a request (header, query, cookie), and
//!   `authenticate` = find + verify, with the 401/403 to send on failure;
//! - [`selector`]: exact topics, `*`, `prefix/*` and URI templates;
//! - [`pattern_index`]: which pattern subscriptions a published topic reaches.

pub mod jwt;
pub mod pattern_index;
pub mod selector;
pub mod token_source;
