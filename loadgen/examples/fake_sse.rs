//! The test suite's fake SSE server as a program, to try the load generator
//! without a real server or to measure the loadgen itself:
//! `cargo run -p stentor-loadgen --example fake_sse -- [DROP_EVERY]`
//! prints its URL and serves until killed.

#[path = "../tests/fake/mod.rs"]
mod fake;

fn main() {
    let drop_every = std::env::args().nth(1).and_then(|a| a.parse().ok());
    let srv = fake::FakeServer::start(fake::Faults {
        drop_every,
        ..fake::Faults::default()
    });
    println!("{}", srv.url());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(10));
        let n = srv.published.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("fake_sse: {n} events published so far");
    }
}
