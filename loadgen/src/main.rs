//! stentor-loadgen: drives many SSE subscribers and a publisher against a
//! server and measures latency, loss, duplicates and dropped slow clients.

fn main() {
    eprintln!("stentor-loadgen: not built yet (issue 7)");
    std::process::exit(2);
}
