//! The node: starts the workers, waits for a signal, shuts them down.
//! CONTRACT (filled in by the data-plane work).

use crate::config::Config;

/// Why the node could not start or stopped with an error. The binary prints
/// it as one line and exits non-zero.
#[derive(Debug)]
pub struct NodeError {
    pub message: String,
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Run the server until SIGTERM/SIGINT, then drain and return.
pub fn run(config: &Config) -> Result<(), NodeError> {
    let _ = config;
    Err(NodeError {
        message: "the io_uring data plane is not built yet (issue 4)".into(),
    })
}
