//! What a published topic costs to match against pattern subscriptions
//! (`stentor::api::pattern_index`), with 1, 100 and 10,000 patterns held:
//! the trie's cost should follow the topic, not the number of patterns.
//! `naive_scan/10000` times the scan the index replaces, for scale.
//!
//! Names: `patterns_match/{N}/hit` (the topic matches one pattern),
//! `patterns_match/{N}/miss` (it matches none), `naive_scan/{N}/hit`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use stentor::api::pattern_index::PatternIndex;
use stentor::api::selector::{Pattern, PatternLimits};

/// Pattern `i` of a realistic mix: per-tenant prefixes, per-tenant URI
/// templates, templates with a variable mid-path and with `{id}.json`.
fn pattern(i: usize) -> Pattern {
    let text = match i % 4 {
        0 => format!("tenant{i}/orders/*"),
        1 => format!("https://example.com/t{i}/books/{{id}}"),
        2 => format!("users/u{i}/{{kind}}/feed"),
        _ => format!("t{i}/books/{{id}}.json"),
    };
    Pattern::parse(&text, &PatternLimits::default()).expect("bench pattern")
}

/// A topic that matches exactly one of `n` patterns.
fn hit_topic(n: usize) -> String {
    if n == 1 {
        return "tenant0/orders/42".into();
    }
    let i = n / 2 - (n / 2) % 4 + 1;
    format!("https://example.com/t{i}/books/42")
}

fn bench_patterns(c: &mut Criterion) {
    let mut group = c.benchmark_group("patterns_match");
    for n in [1usize, 100, 10_000] {
        let patterns: Vec<Pattern> = (0..n).map(pattern).collect();
        let mut index = PatternIndex::new();
        for (key, p) in patterns.iter().enumerate() {
            index.insert(p, key as u32);
        }
        let hit = hit_topic(n);
        let miss = "https://example.com/nobody/books/42";
        let mut out = Vec::with_capacity(16);
        index.matches(&hit, &mut out);
        assert_eq!(out.len(), 1, "{hit} matches one of {n}");
        out.clear();
        index.matches(miss, &mut out);
        assert!(out.is_empty(), "{miss} matches none");

        for (name, topic) in [("hit", hit.as_str()), ("miss", miss)] {
            group.bench_with_input(BenchmarkId::new(n.to_string(), name), topic, |b, t| {
                b.iter(|| {
                    out.clear();
                    index.matches(black_box(t), &mut out);
                    out.len()
                })
            });
        }
    }
    group.finish();

    let patterns: Vec<Pattern> = (0..10_000).map(pattern).collect();
    let hit = hit_topic(10_000);
    c.bench_function("naive_scan/10000/hit", |b| {
        b.iter(|| {
            patterns
                .iter()
                .filter(|p| p.matches(black_box(&hit)))
                .count()
        })
    });
}

criterion_group!(benches, bench_patterns);
criterion_main!(benches);
