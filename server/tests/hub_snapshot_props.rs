//! Replays cut as snapshots (`Hub::replay_snapshot`, under the data plane's
//! lock) and built later (`ReplaySnapshot::replay`, outside it) are exactly
//! the replay of the moment the snapshot was cut, however many publishes,
//! evictions and chunk turnovers happen in between: checked against a plain
//! model of that moment (the kept suffix of each topic, merged newest first
//! within the replay bounds, with its notice) and against `Hub::replay`
//! computed at that moment, byte for byte.

use proptest::prelude::*;
use stentor::hub::history::{HistoryLimits, CHUNK_EVENTS};
use stentor::hub::id::ResumePoint;
use stentor::hub::topic::Topic;
use stentor::hub::{Hub, HubLimits, MissedReason, Published, Replay, ReplaySnapshot};
use stentor::wire::sse::{Event, Frame};

const TOPICS: [&str; 3] = ["a", "b", "c"];
const EPOCH_MS: u64 = 1_764_361_697_000;

#[derive(Debug, Clone)]
enum Op {
    /// Publish on a topic with this many data bytes.
    Publish(usize, usize),
    /// Cut a snapshot for a topic set (bit mask) and a resume choice.
    Snapshot(u8, u16),
    /// Build the pending snapshot at this index (modulo how many wait).
    Build(usize),
}

fn limits() -> impl Strategy<Value = HubLimits> {
    (
        prop_oneof![0usize..8, 60usize..200, 250usize..400],
        prop_oneof![Just(1usize << 20), 2_000usize..200_000],
        prop_oneof![0usize..8, 50usize..150, Just(10_000)],
        prop_oneof![0usize..4_000, Just(1 << 20)],
    )
        .prop_map(
            |(events_max, bytes_max, replay_events_max, replay_bytes_max)| HubLimits {
                topic_bytes_max: 16,
                topics_max: TOPICS.len(),
                history: HistoryLimits {
                    events_max,
                    bytes_max,
                },
                replay_events_max,
                replay_bytes_max,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Skewed to topic 0, so one topic spans many chunks.
        8 => (prop_oneof![6 => Just(0usize), 1 => Just(1), 1 => Just(2)],
              prop_oneof![4 => 0usize..16, 1 => 1_000usize..3_000])
            .prop_map(|(t, n)| Op::Publish(t, n)),
        1 => (1u8..8, any::<u16>()).prop_map(|(m, r)| Op::Snapshot(m, r)),
        1 => any::<usize>().prop_map(Op::Build),
    ]
}

fn topic(i: usize) -> Topic {
    Topic::parse(TOPICS[i], 16).unwrap()
}

#[derive(Debug, Clone)]
struct Sent {
    topic: usize,
    id: u64,
    frame: Frame,
}

/// The model of one topic's history: the longest suffix of its events
/// within both bounds.
fn model_kept(limits: &HubLimits, sent: &[Sent], t: usize) -> Vec<Sent> {
    let mut kept: Vec<Sent> = Vec::new();
    let mut bytes = 0;
    for s in sent.iter().rev().filter(|s| s.topic == t) {
        if kept.len() + 1 > limits.history.events_max
            || bytes + s.frame.len() > limits.history.bytes_max
        {
            break;
        }
        bytes += s.frame.len();
        kept.push(s.clone());
    }
    kept.reverse();
    kept
}

/// What the model says a client resuming after `k` on `topics` gets now:
/// the missed reason and the replayed events, oldest first.
fn model_replay(
    limits: &HubLimits,
    sent: &[Sent],
    base: u64,
    last: u64,
    topics: &[usize],
    resume: &ResumePoint,
) -> (Option<MissedReason>, Vec<Frame>) {
    let (after, mut missed) = match resume {
        ResumePoint::Live => return (None, Vec::new()),
        ResumePoint::After(k) if *k < base => (0, Some(MissedReason::Restarted)),
        ResumePoint::After(k) if *k > last => (0, Some(MissedReason::UnknownId)),
        ResumePoint::After(k) => (*k, None),
        ResumePoint::Unknown(_) => (0, Some(MissedReason::UnknownId)),
    };
    let mut candidates: Vec<Sent> = Vec::new();
    for &t in topics {
        let kept = model_kept(limits, sent, t);
        // Kept is a suffix: an event after `after` is gone iff it is older
        // than the oldest kept one.
        let oldest_kept = kept.first().map_or(u64::MAX, |k| k.id);
        let evicted = sent
            .iter()
            .any(|s| s.topic == t && s.id > after && s.id < oldest_kept);
        if evicted && missed.is_none() {
            missed = Some(MissedReason::Evicted);
        }
        candidates.extend(kept.into_iter().filter(|s| s.id > after));
    }
    candidates.sort_by_key(|s| std::cmp::Reverse(s.id));
    let mut chosen = Vec::new();
    let mut bytes = 0;
    let mut truncated = false;
    for s in candidates {
        if chosen.len() == limits.replay_events_max
            || bytes + s.frame.len() > limits.replay_bytes_max
        {
            truncated = true;
            break;
        }
        bytes += s.frame.len();
        chosen.push(s.frame);
    }
    if truncated && missed.is_none() {
        missed = Some(MissedReason::TooFarBehind);
    }
    chosen.reverse();
    (missed, chosen)
}

/// A snapshot waiting to be built, with what it must build into.
struct Pending {
    snapshot: ReplaySnapshot,
    at_cut: Replay,
    model: (Option<MissedReason>, Vec<Frame>),
}

fn check(p: Pending) -> Result<(), TestCaseError> {
    let through_id = p.snapshot.through_id();
    let built = p.snapshot.replay();
    prop_assert_eq!(built.through_id, through_id);
    prop_assert_eq!(&built, &p.at_cut, "built later != computed at the cut");
    prop_assert_eq!(built.missed, p.model.0);
    prop_assert_eq!(built.events(), &p.model.1[..]);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn snapshots_build_the_replay_of_the_moment_they_were_cut(
        limits in limits(),
        ops in prop::collection::vec(op(), 0..700),
    ) {
        let mut hub = Hub::new(limits, EPOCH_MS);
        let base = hub.base_id();
        let mut sent: Vec<Sent> = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        for op in ops {
            match op {
                Op::Publish(t, n) => {
                    let data = format!("{}-{}", sent.len(), "x".repeat(n));
                    let Published { id, frame, .. } = hub
                        .publish(&topic(t), Event { data, ..Event::default() })
                        .expect("valid publish");
                    sent.push(Sent { topic: t, id, frame });
                }
                Op::Snapshot(mask, r) => {
                    let topics: Vec<usize> =
                        (0..TOPICS.len()).filter(|i| mask & (1 << i) != 0).collect();
                    let names: Vec<Topic> = topics.iter().map(|&t| topic(t)).collect();
                    let last = hub.last_id();
                    let resume = match r % 8 {
                        0 => ResumePoint::Live,
                        1 => ResumePoint::After(base - 1),
                        2 => ResumePoint::After(last + 1 + u64::from(r)),
                        3 => ResumePoint::parse("evt-1"),
                        _ if sent.is_empty() => ResumePoint::After(base),
                        _ => ResumePoint::After(sent[usize::from(r) % sent.len()].id),
                    };
                    pending.push(Pending {
                        snapshot: hub.replay_snapshot(&names, &resume),
                        at_cut: hub.replay(&names, &resume),
                        model: model_replay(&limits, &sent, base, last, &topics, &resume),
                    });
                }
                Op::Build(i) => {
                    if !pending.is_empty() {
                        let i = i % pending.len();
                        check(pending.swap_remove(i))?;
                    }
                }
            }
        }
        for p in pending {
            check(p)?;
        }
    }
}

/// Long histories turn chunks over many times while snapshots hold them:
/// every snapshot still builds what it saw (a fixed case that the random
/// ones above reach only sometimes).
#[test]
fn snapshots_outlive_many_chunk_turnovers() {
    let limits = HubLimits {
        topic_bytes_max: 16,
        topics_max: 2,
        history: HistoryLimits {
            events_max: 5 * CHUNK_EVENTS + 3,
            bytes_max: 1 << 20,
        },
        replay_events_max: 10_000,
        replay_bytes_max: 1 << 20,
    };
    let mut hub = Hub::new(limits, EPOCH_MS);
    let a = [topic(0)];
    let mut held = Vec::new();
    for i in 0..40 * CHUNK_EVENTS {
        hub.publish(
            &a[0],
            Event {
                data: i.to_string(),
                ..Event::default()
            },
        )
        .unwrap();
        if i % 37 == 0 {
            let resume = ResumePoint::After(hub.base_id());
            let kept = (i + 1).min(limits.history.events_max);
            held.push((
                hub.replay_snapshot(&a, &resume),
                hub.replay(&a, &resume),
                kept,
            ));
        }
    }
    assert!(held.len() > 60);
    for (snapshot, at_cut, kept) in held {
        let built = snapshot.replay();
        assert_eq!(built, at_cut);
        // Everything kept at the cut, newest last, in order.
        assert_eq!(built.events().len(), kept);
        let newest = format!("id: {}\n", built.through_id);
        assert!(built.events()[kept - 1].starts_with(newest.as_bytes()));
    }
}
