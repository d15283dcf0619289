//! One connection's state machine and send queue.
