//! `http_head`: whatever bytes a client sends on a connection, the request
//! parser answers without panicking, within its limits, and the same however
//! the bytes arrive.
//!
//! The input is what a client wrote on one connection. It is read the way the
//! worker reads it (`worker/requests.rs`): parse a head, read its body (length
//! or chunked) from the bytes after it, drop both, and go on with the next
//! pipelined request, until the bytes run out or a request is refused.
//! Under the default limits and under small ones (so that short inputs reach
//! every limit too), checked on every request:
//! - a `Complete` head is no longer than the input and than `head_bytes_max`,
//!   and its target is an origin path (`/...`) or `*`, within `uri_bytes_max`;
//! - a `Partial` head has not outgrown `head_bytes_max`;
//! - a body is at most `body_bytes_max` decoded bytes, and no longer than the
//!   wire bytes it used; a `Partial` body has not outgrown
//!   `Limits::body_wire_bytes_max`;
//! - every refusal is a 4xx/5xx with a reason;
//! - each request consumes at least one byte (the worker's loop terminates);
//! - a cut inside the head (a read boundary) gives `Partial` or the verdict of
//!   the whole: a head never parses differently because it arrived in pieces.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stentor::wire::http::{
    parse_head, read_body, BodyFraming, BodyStatus, HeadStatus, HttpError, Limits,
};
use stentor_fuzz::cut_points;

/// The worker answers at most this many pipelined requests per read.
const REQUESTS_MAX: usize = 128;

/// Small limits, so that inputs of a few hundred bytes reach every limit's
/// refusal too.
const SMALL: Limits = Limits {
    head_bytes_max: 256,
    headers_count_max: 4,
    uri_bytes_max: 64,
    body_bytes_max: 16,
};

fuzz_target!(|data: &[u8]| {
    connection(data, &Limits::default());
    connection(data, &SMALL);
});

/// Read `data` as the worker reads one connection's bytes under `limits`.
fn connection(data: &[u8], limits: &Limits) {
    let limits = *limits;
    let mut rest = data;
    for _ in 0..REQUESTS_MAX {
        if rest.is_empty() {
            return;
        }
        let whole = parse_head(rest, &limits);
        check_cuts(rest, &whole, &limits);
        let (head, head_len) = match whole {
            Err(e) => return check_error(&e),
            Ok(HeadStatus::Partial) => {
                assert!(
                    rest.len() <= limits.head_bytes_max,
                    "Partial past the head limit"
                );
                return;
            }
            Ok(HeadStatus::Complete { head, head_len }) => (head, head_len),
        };
        assert!(
            head_len > 0 && head_len <= rest.len(),
            "head_len {head_len} of {}",
            rest.len()
        );
        assert!(head_len <= limits.head_bytes_max);
        assert!(
            head.path.starts_with('/') || head.path == "*",
            "path {:?}",
            head.path
        );
        assert!(head.path.len() + head.query.len() < limits.uri_bytes_max + 1);
        assert!(!head.path.contains('?') && !head.path.contains('#'));
        let body_bytes = &rest[head_len..];
        let consumed = match head.body {
            BodyFraming::None => 0,
            framing => match read_body(framing, body_bytes, &limits) {
                Err(e) => return check_error(&e),
                Ok(BodyStatus::Partial) => {
                    assert!(
                        body_bytes.len() <= limits.body_wire_bytes_max(),
                        "Partial body after {} bytes",
                        body_bytes.len()
                    );
                    if let BodyFraming::Length(length) = framing {
                        assert!(body_bytes.len() < length);
                    }
                    return;
                }
                Ok(BodyStatus::Complete { body, consumed }) => {
                    assert!(
                        body.len() <= limits.body_bytes_max,
                        "body of {}",
                        body.len()
                    );
                    assert!(consumed <= body_bytes.len());
                    assert!(body.len() <= consumed);
                    if let BodyFraming::Length(length) = framing {
                        assert_eq!((body.len(), consumed), (length, length));
                        assert_eq!(body, &body_bytes[..length]);
                    }
                    consumed
                }
            },
        };
        rest = &rest[head_len + consumed..];
    }
}

fn check_error(e: &HttpError) {
    let status = e.status();
    assert!((400..=599).contains(&status), "{e:?} answers {status}");
    assert!(!e.reason().is_empty());
}

/// The head parsed from a prefix of `bytes` (a read boundary at `cut`) is
/// `Partial` or the same verdict as from all of `bytes`.
fn check_cuts(bytes: &[u8], whole: &Result<HeadStatus, HttpError>, limits: &Limits) {
    // Where the head ends (or the parser stopped looking): cuts past it see
    // the same head bytes as the whole.
    let end = match whole {
        Ok(HeadStatus::Complete { head_len, .. }) => *head_len,
        _ => bytes.len().min(limits.head_bytes_max + 1),
    };
    let mut cuts = cut_points(bytes, end, 8);
    if end > 0 {
        cuts.push(end - 1);
    }
    cuts.push(end);
    for cut in cuts {
        let got = parse_head(&bytes[..cut], limits);
        if got == Ok(HeadStatus::Partial) {
            continue;
        }
        assert_eq!(&got, whole, "cut at {cut} of {}", bytes.len());
    }
}
