//! stentor-bench: criterion benches of the hot path and the regression gate.
