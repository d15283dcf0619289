//! `route`: the request policy (`stentor::api::decide`, then
//! `api::publish_body` for an authorized publish), fed whatever request a
//! client sends, from any peer, under several configurations.
//!
//! The input is a selector byte (which configuration and which peer) and
//! then raw request bytes. Checked:
//! - no panic on any head `parse_head` accepts;
//! - every answer is a real status (100..=599) with a reason body, and a
//!   refusal (>= 400) never asks for the body: only `ReadBody` does, and only
//!   for `POST /publish`;
//! - without a token, a peer that is not loopback (and no trusted proxy)
//!   never gets to publish, whatever headers it sends;
//! - a publish body decodes to events with valid topics, or to a 4xx.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use stentor::api::authz::{AuthzConfig, SubscribeAuth};
use stentor::api::client::TrustedProxies;
use stentor::api::cors::Cors;
use stentor::api::publish::PublishRules;
use stentor::api::{decide, publish_body, ApiConfig, Decision};
use stentor::wire::http::{parse_head, read_body, BodyStatus, HeadStatus, Limits, Method};

const LIMITS: Limits = Limits {
    head_bytes_max: 8192,
    headers_count_max: 64,
    uri_bytes_max: 4096,
    body_bytes_max: 1 << 16,
};

fn config(selector: u8) -> ApiConfig {
    ApiConfig {
        topics_per_stream_max: 4,
        topic_bytes_max: 128,
        publish_rules: PublishRules {
            topic_bytes_max: 128,
            batch_events_max: 8,
        },
        publish_token: (selector & 1 != 0).then(|| "fuzz-token-0123456789".to_string()),
        subscribe_token: (selector & 2 != 0).then(|| "fuzz-sub-token-0123456789".to_string()),
        cors: Cors::from_list(&["https://app.example".to_string()]),
        trusted_proxies: if selector & 4 != 0 {
            TrustedProxies::new(vec!["127.0.0.1".parse().unwrap()])
        } else {
            TrustedProxies::default()
        },
        authz: AuthzConfig {
            keys: None,
            subscribe_auth: SubscribeAuth::Off,
            admin_token: (selector & 8 != 0).then(|| "fuzz-admin-token-0123456789".to_string()),
            generation: 0,
        },
        metrics_public: selector & 16 == 0,
        pattern_limits: stentor::api::selector::PatternLimits::default(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, request)) = data.split_first() else {
        return;
    };
    let peer: IpAddr = match selector >> 4 {
        0..=5 => [127, 0, 0, 1].into(),
        6..=9 => [203, 0, 113, 9].into(),
        10..=12 => "::1".parse().unwrap(),
        _ => "2001:db8::9".parse().unwrap(),
    };
    let cfg = config(selector);
    let Ok(HeadStatus::Complete { head, head_len }) = parse_head(request, &LIMITS) else {
        return;
    };
    match decide(&head, peer, &cfg) {
        Decision::Respond(r) => {
            assert!((100..=599).contains(&r.status), "status {}", r.status);
            let _ = r.encode();
        }
        Decision::Stream {
            topics, patterns, ..
        } => {
            assert!(!topics.is_empty() || !patterns.is_empty());
            assert!(topics.len() + patterns.len() <= cfg.topics_per_stream_max);
            assert_eq!(head.method, Method::Get);
        }
        Decision::Metrics { .. } => {
            assert_eq!(head.path, "/metrics");
            assert!(
                cfg.metrics_public,
                "/metrics served while --admin-listen has it"
            );
        }
        Decision::Presence { .. } => assert_eq!(head.path, "/subscriptions"),
        Decision::Ready { .. } => assert_eq!(head.path, "/readyz"),
        Decision::ReadBody(grant) => {
            assert_eq!(
                (head.method, head.path.as_str()),
                (Method::Post, "/publish")
            );
            let untrusted_remote = !peer.is_loopback() && selector & 4 == 0;
            assert!(
                cfg.publish_token.is_some() || !untrusted_remote,
                "a remote peer may publish without a token"
            );
            let body = match read_body(head.body, &request[head_len..], &LIMITS) {
                Ok(BodyStatus::Complete { body, .. }) => body,
                _ => return,
            };
            match publish_body(&grant, &head, &body, &cfg) {
                Ok(events) => {
                    assert!(!events.is_empty() && events.len() <= 8);
                }
                Err(r) => assert!((400..=499).contains(&r.status), "status {}", r.status),
            }
        }
    }
});
