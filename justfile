# stentor tasks. Install just with `cargo install just --locked`.

# Run the server with its embedded defaults (0.0.0.0:8080).
run *ARGS:
    cargo run --release -p stentor -- {{ARGS}}

# The whole test suite, as CI runs it.
test:
    cargo test --workspace

# Everything CI checks, on this machine.
ci:
    bash .ci/run

# Criterion micro-benches of the hot path (wire encode/parse).
bench-micro:
    cargo bench -p stentor-bench --bench wire

# CI regression gate: callgrind instruction counts vs bench/baselines/callgrind.tsv (--update rewrites it on purpose; docs/benchmarks.md).
bench-gate *ARGS:
    bash .ci/bench-gate {{ARGS}}

# Criterion wall-clock benches as ratios to a calibration bench of the same run (report, not CI).
bench-ratios *ARGS:
    bash bench/scripts/criterion-ratios {{ARGS}}

# Capacity planning sweep: not built yet, issue 8 adds it.
bench *ARGS:
    @echo "just bench: the capacity-planning sweep is added by issue 8 (benchmarks and CI gate); 'just bench-micro' runs the criterion benches" >&2
    @exit 2

# A load run against a local stentor: 1000 subscribers, 100 events/s, 10 s.
load *ARGS:
    cargo run --release -p stentor-loadgen -- run --url http://127.0.0.1:8080 {{ARGS}}
