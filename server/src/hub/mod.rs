//! Topics, ids, history and who gets which frame. Pure: no I/O, no clocks.
pub mod index;
