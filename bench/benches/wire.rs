//! Hot-path benches for the wire layer: what the server does once per event
//! (encode) and once per request (parse a head), and what the load generator
//! does per delivery (parse a stream). Names read as a table:
//! `sse_encode/128B`, `sse_encode/4KiB`, `http_parse_head/subscribe`, ...

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use stentor::wire::{http, sse};
// The same inputs as the callgrind gate's workloads, so both measure one thing.
use stentor_bench::workloads::{event_of, SUBSCRIBE_HEAD};

fn bench_sse_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse_encode");
    for (name, bytes, lines) in [
        ("128B", 128, 1),
        ("4KiB", 4096, 1),
        ("4KiB_64_lines", 4096, 64),
    ] {
        let event = event_of(bytes, lines);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &event, |b, ev| {
            b.iter(|| sse::encode(black_box(ev)).expect("valid event"))
        });
    }
    group.finish();
}

fn bench_sse_parse(c: &mut Criterion) {
    let mut stream = Vec::new();
    for _ in 0..100 {
        stream.extend_from_slice(&sse::encode(&event_of(128, 1)).expect("valid event"));
    }
    let mut group = c.benchmark_group("sse_parse");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("100x128B_one_read", |b| {
        let mut out = Vec::with_capacity(128);
        b.iter(|| {
            let mut parser = sse::Parser::new();
            out.clear();
            parser.feed(black_box(&stream), &mut out);
            assert_eq!(out.len(), 100);
        })
    });
    group.finish();
}

fn bench_http_parse_head(c: &mut Criterion) {
    let limits = http::Limits {
        head_bytes_max: 8192,
        headers_count_max: 64,
        uri_bytes_max: 4096,
        body_bytes_max: 1 << 20,
    };
    let subscribe = SUBSCRIBE_HEAD;
    let mut group = c.benchmark_group("http_parse_head");
    group.throughput(Throughput::Bytes(subscribe.len() as u64));
    group.bench_function("subscribe", |b| {
        b.iter(|| match http::parse_head(black_box(subscribe), &limits) {
            Ok(http::HeadStatus::Complete { head_len, .. }) => head_len,
            other => panic!("typical head must parse: {other:?}"),
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_sse_encode,
    bench_sse_parse,
    bench_http_parse_head
);
criterion_main!(benches);
