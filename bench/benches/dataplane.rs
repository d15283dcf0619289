//! Hot-path benches for the data plane and the hub: what a worker does per
//! published frame (fan-out planning), per send (building iovec batches,
//! partial completions), per SQE (tokens), and what the hub does per publish
//! (history append) and per resuming subscriber (replay lookup). Same
//! operations and names as the gate's workloads (`stentor_bench::dataplane`),
//! so the two reports read alike: `fanout_plan/10k_subscribers`,
//! `sendq_coalesce/16x128B`, `token/pack_unpack`, ...

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use stentor::ring::sendq::SendQueue;
use stentor::ring::token::{OpKind, Token, GENERATION_MAX};
use stentor_bench::dataplane;

fn bench_fanout(c: &mut Criterion) {
    let frame = dataplane::frame_128b();
    let mut group = c.benchmark_group("fanout_plan");
    for (name, subscribers) in [
        ("1k_subscribers", 1_000u32),
        ("10k_subscribers", 10_000),
        ("100k_subscribers", 100_000),
    ] {
        let index = dataplane::index_with_subscribers(subscribers);
        group.throughput(Throughput::Elements(u64::from(subscribers)));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            // Fresh idle queues per pass (not timed), as the gate does.
            b.iter_batched(
                || {
                    (
                        dataplane::fresh_queues(subscribers),
                        Vec::with_capacity(subscribers as usize),
                    )
                },
                |(mut queues, mut dirty)| {
                    let delivered = dataplane::deliver(
                        black_box(&index),
                        dataplane::TOPIC,
                        &frame,
                        &mut queues,
                        &mut dirty,
                        1,
                    );
                    (delivered, queues, dirty)
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn bench_sendq(c: &mut Criterion) {
    let frame = dataplane::frame_128b();
    let mut iovecs = Vec::with_capacity(dataplane::IOVECS_PER_SEND_MAX);
    let mut queue = SendQueue::new();
    let mut group = c.benchmark_group("sendq_coalesce");
    group.throughput(Throughput::Bytes(16 * frame.len() as u64));
    group.bench_function("16x128B", |b| {
        b.iter(|| dataplane::coalesce_cycle(&mut queue, black_box(&frame), 16, &mut iovecs))
    });
    group.finish();
    let mut group = c.benchmark_group("sendq_partial");
    group.throughput(Throughput::Bytes(64 * frame.len() as u64));
    group.bench_function("64x128B_in_1000B_sends", |b| {
        b.iter(|| dataplane::partial_send_cycle(&mut queue, black_box(&frame), 64, &mut iovecs))
    });
    group.finish();
}

fn bench_token(c: &mut Criterion) {
    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Elements(1));
    let mut key = 0u32;
    group.bench_function("pack_unpack", |b| {
        b.iter(|| {
            key = key.wrapping_add(1);
            let token = Token::new(
                OpKind::Send,
                black_box(key),
                black_box(key & GENERATION_MAX),
            );
            Token::unpack(black_box(token.pack()))
        })
    });
    group.finish();
}

fn bench_hub(c: &mut Criterion) {
    let frame = dataplane::frame_128b();
    let mut history = dataplane::full_history(&frame);
    let mut id = dataplane::HISTORY_EVENTS as u64;
    let mut group = c.benchmark_group("history_append");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("128B_full_ring", |b| {
        b.iter(|| {
            id += 1;
            history.push(black_box(id), frame.clone())
        })
    });
    group.finish();
    let (hub, topic, resume) = dataplane::hub_for_replay();
    let mut group = c.benchmark_group("hub_replay");
    group.throughput(Throughput::Elements(dataplane::REPLAY_MISSED));
    group.bench_function("100_of_1000", |b| {
        b.iter(|| dataplane::replay(black_box(&hub), &topic, black_box(&resume)))
    });
    group.finish();
}

criterion_group!(benches, bench_fanout, bench_sendq, bench_token, bench_hub);
criterion_main!(benches);
