//! Pure wire formats: no sockets, no clocks, no allocation beyond what the
//! caller asks for. Shared by the server, the load generator and the benches.

pub mod http;
pub mod proxy;
pub mod sse;
