# stentor tasks. Install just with `cargo install just --locked`.

# Run the server with its embedded defaults (0.0.0.0:8080).
run *ARGS:
    cargo run --release -p stentor -- {{ARGS}}

# The whole test suite, as CI runs it.
test:
    cargo test --workspace

# Release artifacts: optimized stentor and stentor-loadgen, the .deb (man page, completions,
# systemd unit, /etc/stentor/stentor.toml) and SHA256SUMS, in target/dist/stentor-VERSION-gitREV/.
release:
    bash deploy/release

# Build the .deb, install it with dpkg, run the installed binary, remove it (root; CI runs it).
deb-check:
    bash .ci/deb-check

# Everything CI checks, on this machine.
ci:
    bash .ci/run

# Fuzz one target for SECONDS (default 60) with cargo-fuzz on nightly, e.g. `just fuzz http_head 300`;
# `just fuzz all` runs every target. Installs nightly and cargo-fuzz if missing; docs/measurements/benchmarks.md "Fuzzing".
fuzz TARGET SECONDS="60":
    FUZZ_SECONDS={{SECONDS}} bash .ci/fuzz {{TARGET}}

# Criterion micro-benches of the hot path (wire encode/parse, fan-out, send queue, tokens, history, replay).
bench-micro *ARGS:
    cargo bench -p stentor-bench --bench wire --bench dataplane {{ARGS}}

# CI regression gate: callgrind instruction counts vs bench/baselines/callgrind.tsv (--update rewrites it on purpose; docs/measurements/benchmarks.md).
bench-gate *ARGS:
    bash .ci/bench-gate {{ARGS}}

# Criterion wall-clock benches as ratios to a calibration bench of the same run (report, not CI).
bench-ratios *ARGS:
    bash bench/scripts/criterion-ratios {{ARGS}}

# Capacity planning on this machine: stentor + stentor-loadgen sweep vs the machine's send() ceiling,
# a few minutes (--quick: ~1 minute). Writes target/capacity/report.{md,html,json}; docs/measurements/capacity-planning.md.
bench *ARGS:
    cargo build --release --locked -p stentor -p stentor-loadgen -p stentor-bench --bin stentor --bin stentor-loadgen --bin stentor-ceiling --bin stentor-capacity
    cargo run --release --locked -q -p stentor-bench --bin stentor-capacity -- {{ARGS}}

# The ~1 minute capacity sweep (= just bench --quick).
bench-quick *ARGS:
    just bench --quick {{ARGS}}

# The machine's loopback send() ceiling alone, e.g. `just bench-ceiling --pairs 10000 --seconds 5`.
bench-ceiling *ARGS:
    cargo run --release --locked -q -p stentor-bench --bin stentor-ceiling -- {{ARGS}}

# A sequential publisher (one POST at a time, waiting for each answer) beside N subscribers,
# stentor and the peers in PEERS_DIR (nchan/, axum-hub/ with start/stop) alternating, medians of 3,
# e.g. `just seqpub-compare PEERS_DIR "10 128" 10 10000` (docs/measurements/performance.md, section 6).
seqpub-compare PEERS_DIR *ARGS:
    cargo build --release --locked -p stentor -p stentor-bench --bin stentor --bin stentor-seqpub
    bash bench/scripts/seqpub-compare {{PEERS_DIR}} {{ARGS}}

# The loadgen's loads A (1k subscribers, 100 ev/s), B (10k, 10 ev/s) and C (10k, 128 ev/s) with a
# sequential publisher, delivery latency at kernel receive, stentor and the peers alternating,
# medians of 3, e.g. `just peers-compare PEERS_DIR "A B C" 10` (performance.md, section 11).
# SERVER_CPUS=0 LOADGEN_CPUS=1 keeps the servers and the loadgen on separate CPUs (section 12).
peers-compare PEERS_DIR *ARGS:
    cargo build --release --locked -p stentor -p stentor-loadgen
    bash bench/scripts/peers-compare {{PEERS_DIR}} {{ARGS}}

# A node killed mid-run behind a load balancer: one Redis, 3 nodes on it, nginx in front (round robin),
# the loadgen subscribing through nginx with --reconnect; node 3 gets SIGKILL after KILL_AT_S s of
# publishing and its clients resume on the others. Medians of RUNS, e.g. `just fleet-kill 3 9000 10 30 10`
# (args: RUNS SUBSCRIBERS RATE SECONDS KILL_AT_S; needs redis-server and nginx; performance.md, section 8).
fleet-kill *ARGS:
    cargo build --release --locked -p stentor -p stentor-loadgen --bin stentor --bin stentor-loadgen
    bash bench/scripts/fleet-kill {{ARGS}}

# A load run against a local stentor: 1000 subscribers, 100 events/s, 10 s.
load *ARGS:
    cargo run --release -p stentor-loadgen -- run --url http://127.0.0.1:8080 {{ARGS}}

# One million idle subscribers on one node (issue figures in docs/measurements/performance.md):
# connects N streams from 127.77.0.1.. (10,000 per address), publishes once to all,
# prints RSS per subscriber, kernel memory, time to connect, time and CPU for the fan-out.
# Needs ~12 GiB of RAM and a few minutes; `just million 200000` for a smaller run.
million N="1000000":
    STENTOR_IDLE_SUBSCRIBERS={{N}} cargo test --release -p stentor --test dataplane idle_subscribers_memory -- --ignored --nocapture
