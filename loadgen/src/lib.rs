//! The library side of `stentor-loadgen`: what other tools reuse without
//! running a load. [`svg`]: the inline SVG line charts both the loadgen's
//! HTML report and the bench's capacity report draw with; [`contract`]: the
//! `--json` report's fields other tools read, as types.

pub mod contract;
pub mod svg;
