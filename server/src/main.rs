//! The `stentor` binary: parse the configuration, run the node. Everything
//! else lives in the library so tests and benches reach it.

use mimalloc::MiMalloc;

// mimalloc: per-thread free lists suit one-thread-per-ring workers, and it
// returns memory to the OS when a burst of connections goes away.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    let config = stentor::config::Config::from_args_or_exit();
    stentor::log::init(&config.log_level, config.log_format);
    stentor::log::set_access(config.access_log, config.access_log_lines_per_s_max);
    if let Err(e) = stentor::node::run(&config) {
        eprintln!("stentor: {e}");
        std::process::exit(1);
    }
}
