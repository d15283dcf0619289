//! Properties of the hub against a plain model: whatever is published over a
//! few topics under any bounds, history stays within both bounds, ids
//! increase, a resume gets exactly the kept events after its id (and a notice
//! iff something after it is gone), and replay + live meet with no gap and
//! no duplicate.

use proptest::prelude::*;
use stentor::hub::history::HistoryLimits;
use stentor::hub::id::ResumePoint;
use stentor::hub::topic::Topic;
use stentor::hub::{Hub, HubLimits, MissedReason, Published};
use stentor::wire::sse::{Event, Frame, Item, Parser};

const TOPICS: [&str; 3] = ["a", "b", "c"];
const EPOCH_MS: u64 = 1_764_361_697_000;

#[derive(Debug, Clone)]
struct Case {
    limits: HubLimits,
    /// (topic index, data) in publish order.
    publishes: Vec<(usize, String)>,
}

fn limits() -> impl Strategy<Value = HubLimits> {
    (
        0usize..6,
        prop_oneof![0usize..120, Just(1 << 20)],
        prop_oneof![0usize..8, Just(10_000)],
        prop_oneof![0usize..200, Just(1 << 20)],
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

fn case() -> impl Strategy<Value = Case> {
    (
        limits(),
        prop::collection::vec((0..TOPICS.len(), "[a-z\n\r ]{0,24}"), 0..40),
    )
        .prop_map(|(limits, publishes)| Case { limits, publishes })
}

fn topic(i: usize) -> Topic {
    Topic::parse(TOPICS[i], 16).unwrap()
}

/// One published event as the model remembers it.
#[derive(Debug, Clone)]
struct Sent {
    topic: usize,
    id: u64,
    frame: Frame,
}

fn publish_all(hub: &mut Hub, publishes: &[(usize, String)], sent: &mut Vec<Sent>) {
    for (t, data) in publishes {
        let Published { id, frame, .. } = hub
            .publish(
                &topic(*t),
                Event {
                    data: data.clone(),
                    ..Event::default()
                },
            )
            .expect("valid publish");
        sent.push(Sent {
            topic: *t,
            id,
            frame,
        });
    }
}

/// What the model says a topic keeps: the longest suffix of its events that
/// fits both bounds.
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

fn ids(frames: &[Frame]) -> Vec<u64> {
    let mut parser = Parser::new();
    let mut items = Vec::new();
    let mut out = Vec::new();
    for f in frames {
        parser.feed(f, &mut items);
        for item in items.drain(..) {
            if let Item::Event(e) = item {
                out.push(e.last_event_id.parse::<u64>().expect("decimal id"));
            }
        }
    }
    out
}

fn subset(mask: u8) -> Vec<usize> {
    (0..TOPICS.len()).filter(|i| mask & (1 << i) != 0).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn history_bounds_and_ids(case in case()) {
        let mut hub = Hub::new(case.limits, EPOCH_MS);
        let mut sent = Vec::new();
        publish_all(&mut hub, &case.publishes, &mut sent);

        // Ids strictly increase, start above the run's base, and are the
        // decimal `id:` of their own frame.
        let mut last = hub.base_id();
        for s in &sent {
            prop_assert!(s.id > last);
            last = s.id;
            prop_assert_eq!(ids(std::slice::from_ref(&s.frame)), vec![s.id]);
        }
        prop_assert_eq!(hub.last_id(), last);

        let mut events = 0;
        let mut bytes = 0;
        for (t, name) in TOPICS.iter().enumerate() {
            let Some(h) = hub.history(name) else {
                prop_assert!(sent.iter().all(|s| s.topic != t));
                continue;
            };
            prop_assert!(h.len() <= case.limits.history.events_max);
            prop_assert!(h.bytes() <= case.limits.history.bytes_max);
            let kept: Vec<(u64, Frame)> = h.after(0).map(|e| (e.id, e.frame.clone())).collect();
            let want: Vec<(u64, Frame)> = model_kept(&case.limits, &sent, t)
                .into_iter()
                .map(|s| (s.id, s.frame))
                .collect();
            prop_assert_eq!(kept, want);
            events += h.len();
            bytes += h.bytes();
        }
        let stats = hub.stats();
        prop_assert_eq!(stats.history_events, events);
        prop_assert_eq!(stats.history_bytes, bytes);
        prop_assert_eq!(stats.published_total, sent.len() as u64);
        prop_assert_eq!(
            stats.evicted_events_total as usize + stats.history_events,
            sent.len()
        );
    }

    #[test]
    fn replay_is_exactly_what_is_kept_after_the_id(
        case in case(),
        mask in 1u8..8,
        back in 0usize..45,
    ) {
        let mut hub = Hub::new(case.limits, EPOCH_MS);
        let mut sent = Vec::new();
        publish_all(&mut hub, &case.publishes, &mut sent);
        let wanted = subset(mask);
        let topics: Vec<Topic> = wanted.iter().map(|&t| topic(t)).collect();
        // k: the run's base, or the id of any event published so far.
        let k = sent.len().checked_sub(back + 1).map_or(hub.base_id(), |i| sent[i].id);

        let r = hub.replay(&topics, &ResumePoint::After(k));
        prop_assert_eq!(r.through_id, hub.last_id());

        let mut kept_after: Vec<Sent> = wanted
            .iter()
            .flat_map(|&t| model_kept(&case.limits, &sent, t))
            .filter(|s| s.id > k)
            .collect();
        kept_after.sort_by_key(|s| s.id);
        let gone_after = sent
            .iter()
            .filter(|s| wanted.contains(&s.topic) && s.id > k)
            .count()
            > kept_after.len();

        // The replay sends the newest of those within its bounds.
        let mut fit: Vec<Frame> = Vec::new();
        let mut bytes = 0;
        for s in kept_after.iter().rev() {
            if fit.len() == case.limits.replay_events_max
                || bytes + s.frame.len() > case.limits.replay_bytes_max
            {
                break;
            }
            bytes += s.frame.len();
            fit.push(s.frame.clone());
        }
        fit.reverse();
        let truncated = fit.len() < kept_after.len();

        prop_assert_eq!(r.events(), &fit[..]);
        let want_missed = if gone_after {
            Some(MissedReason::Evicted)
        } else if truncated {
            Some(MissedReason::TooFarBehind)
        } else {
            None
        };
        prop_assert_eq!(r.missed, want_missed);
        // The notice, when any, comes first and is the only extra frame.
        prop_assert_eq!(r.frames.len(), fit.len() + usize::from(r.missed.is_some()));
        let replayed = ids(r.events());
        prop_assert!(replayed.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn replay_then_live_has_no_gap_and_no_duplicate(
        case in case(),
        mask in 1u8..8,
        split in 0usize..40,
        back in 0usize..45,
        in_flight in 0usize..10,
    ) {
        let split = split.min(case.publishes.len());
        let mut hub = Hub::new(case.limits, EPOCH_MS);
        let mut sent = Vec::new();
        publish_all(&mut hub, &case.publishes[..split], &mut sent);
        let wanted = subset(mask);
        let topics: Vec<Topic> = wanted.iter().map(|&t| topic(t)).collect();
        let k = sent.len().checked_sub(back + 1).map_or(hub.base_id(), |i| sent[i].id);

        let r = hub.replay(&topics, &ResumePoint::After(k));
        publish_all(&mut hub, &case.publishes[split..], &mut sent);

        // Live: the subscriber was registered before the replay, so it also
        // sees the last `in_flight` events published before it (still in a
        // worker's inbox); the filter `id > through_id` must drop those.
        let first_live = split.saturating_sub(in_flight);
        let live: Vec<Frame> = sent[first_live..]
            .iter()
            .filter(|s| wanted.contains(&s.topic) && s.id > r.through_id)
            .map(|s| s.frame.clone())
            .collect();
        let mut stream = r.events().to_vec();
        stream.extend(live);
        let got = ids(&stream);

        // No duplicate, in order.
        prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "{:?}", got);
        // Everything published after the subscribe arrives.
        let after: Vec<u64> = sent[split..]
            .iter()
            .filter(|s| wanted.contains(&s.topic))
            .map(|s| s.id)
            .collect();
        prop_assert!(got.ends_with(&after));
        // Without a notice, the stream is exactly every event after k.
        if r.missed.is_none() {
            let all: Vec<u64> = sent
                .iter()
                .filter(|s| wanted.contains(&s.topic) && s.id > k)
                .map(|s| s.id)
                .collect();
            prop_assert_eq!(got, all);
        }
    }

    #[test]
    fn foreign_ids_replay_what_is_kept_with_a_notice(
        case in case(),
        mask in 1u8..8,
        raw in prop_oneof![
            Just("0".to_owned()),
            Just("1764361696999999".to_owned()),
            Just("99999999999999999".to_owned()),
            "[ -~]{1,30}",
        ],
    ) {
        let mut hub = Hub::new(case.limits, EPOCH_MS);
        let mut sent = Vec::new();
        publish_all(&mut hub, &case.publishes, &mut sent);
        let wanted = subset(mask);
        let topics: Vec<Topic> = wanted.iter().map(|&t| topic(t)).collect();
        let resume = ResumePoint::parse(&raw);
        let r = hub.replay(&topics, &resume);
        match resume {
            ResumePoint::Live => prop_assert_eq!(r.frames.len(), 0),
            ResumePoint::After(k) if k >= hub.base_id() && k <= hub.last_id() => {}
            ResumePoint::After(k) if k < hub.base_id() => {
                prop_assert_eq!(r.missed, Some(MissedReason::Restarted));
            }
            _ => prop_assert_eq!(r.missed, Some(MissedReason::UnknownId)),
        }
        if matches!(r.missed, Some(MissedReason::Restarted | MissedReason::UnknownId)) {
            // The notice is one event a browser can listen for, then the kept
            // events (newest within the replay bounds).
            let mut parser = Parser::new();
            let mut items = Vec::new();
            parser.feed(&r.frames[0], &mut items);
            prop_assert_eq!(items.len(), 1);
            let Item::Event(notice) = &items[0] else {
                return Err(TestCaseError::fail("notice is not an event"));
            };
            prop_assert_eq!(notice.event_type.as_str(), "stentor.missed");
            let data: serde_json::Value = serde_json::from_str(&notice.data).unwrap();
            prop_assert!(data["reason"] == "restarted" || data["reason"] == "unknown_id");
            let n = wanted
                .iter()
                .map(|&t| model_kept(&case.limits, &sent, t).len())
                .sum::<usize>();
            prop_assert!(r.events().len() <= n);
        }
    }
}
