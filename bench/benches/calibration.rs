//! Calibration benches: fixed, plain CPU and memory work that none of our
//! code changes. Their time moves only with the machine (clock, contention
//! from other jobs), so the other benches are reported as ratios to them,
//! measured in the same session (`bench/scripts/criterion-ratios`).
//!
//! - `calibration/int_chain_1k`: 1000 dependent xorshift steps: pure ALU
//!   latency, no memory traffic. The default reference.
//! - `calibration/memcpy_4KiB`: copy 4 KiB between two L1-resident buffers,
//!   for comparing copy-bound benches (`sse_encode/4KiB`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Steps in the integer chain: long enough that loop overhead is noise,
/// short enough to be in the same range as one hot-path operation.
const INT_CHAIN_STEPS: u32 = 1000;
/// Bytes copied by the memcpy calibration: one large event.
const MEMCPY_BYTES: usize = 4096;

fn int_chain(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..INT_CHAIN_STEPS {
        // xorshift64: each step depends on the last, so the CPU cannot
        // overlap them and the compiler cannot fold the loop.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn bench_calibration(c: &mut Criterion) {
    let mut group = c.benchmark_group("calibration");
    group.throughput(Throughput::Elements(u64::from(INT_CHAIN_STEPS)));
    group.bench_function("int_chain_1k", |b| {
        b.iter(|| int_chain(black_box(0x9E37_79B9_7F4A_7C15)))
    });
    let source = vec![0xA5u8; MEMCPY_BYTES];
    let mut target = vec![0u8; MEMCPY_BYTES];
    group.throughput(Throughput::Bytes(MEMCPY_BYTES as u64));
    group.bench_function("memcpy_4KiB", |b| {
        b.iter(|| {
            target.copy_from_slice(black_box(&source));
            black_box(&mut target);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_calibration);
criterion_main!(benches);
