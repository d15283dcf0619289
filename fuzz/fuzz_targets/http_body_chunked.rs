//! `http_body_chunked`: the chunked body decoder (`read_body` with
//! `BodyFraming::Chunked`) on whatever bytes follow a request head.
//!
//! `read_body` is stateless: the worker calls it again on its whole buffer
//! after every read until it answers `Complete` or an error. So "fed in
//! pieces" means "called on growing prefixes", and the property is: along
//! the prefixes the answers are `Partial`, `Partial`, ..., then the whole
//! input's verdict and nothing else (the same body and `consumed`, or the
//! same error). Checked at every prefix for short inputs, at pseudo-random
//! ones (from the input's hash) for longer ones, under the default limits and
//! under a 16-byte `body_bytes_max` so the size refusals are reached too.
//! Also: a body is within `body_bytes_max` and no longer than its wire bytes,
//! a `Partial` answer never asks to buffer more than `body_wire_bytes_max`,
//! a body the decoder accepts is what a plain reference decoder (below) reads
//! from the same bytes, and a body written by the server's own chunk encoder (`write_chunk`,
//! `write_last_chunk`, chunks taken from the input) decodes to its data.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use stentor::wire::http::{
    read_body, write_chunk, write_last_chunk, BodyFraming, BodyStatus, HttpError, Limits,
};
use stentor_fuzz::prefix_lengths;

fn small_limits() -> Limits {
    Limits {
        body_bytes_max: 16,
        ..Limits::default()
    }
}

/// Chunks for the encoder round trip, structured by `arbitrary`.
#[derive(Arbitrary, Debug)]
struct Chunks(Vec<Vec<u8>>);

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::default(), small_limits()] {
        check_prefixes(data, &limits);
    }
    round_trip(data);
});

fn check_prefixes(data: &[u8], limits: &Limits) {
    let whole = read_body(BodyFraming::Chunked, data, limits);
    check_answer(data, &whole, limits);
    let mut decided = false;
    for len in prefix_lengths(data, data.len()) {
        let got = read_body(BodyFraming::Chunked, &data[..len], limits);
        check_answer(&data[..len], &got, limits);
        match (&got, &whole) {
            (Ok(BodyStatus::Partial), _) => {
                assert!(
                    !decided,
                    "Partial at {len} after a verdict on a shorter prefix"
                );
                if let Ok(BodyStatus::Complete { consumed, .. }) = &whole {
                    assert!(
                        len < *consumed,
                        "Partial at {len} though {consumed} bytes suffice"
                    );
                }
            }
            _ => {
                assert_eq!(&got, &whole, "prefix {len} of {}", data.len());
                decided = true;
            }
        }
    }
}

fn check_answer(buf: &[u8], answer: &Result<BodyStatus, HttpError>, limits: &Limits) {
    match answer {
        Ok(BodyStatus::Partial) => assert!(
            buf.len() <= limits.body_wire_bytes_max(),
            "Partial after {} bytes",
            buf.len()
        ),
        Ok(BodyStatus::Complete { body, consumed }) => {
            assert!(
                body.len() <= limits.body_bytes_max,
                "body of {}",
                body.len()
            );
            assert!(*consumed <= buf.len());
            // At least `0\r\n\r\n` besides the data.
            assert!(body.len() + 5 <= *consumed);
            assert_eq!(
                reference_decode(&buf[..*consumed]),
                Some(body.clone()),
                "the reference decoder disagrees"
            );
        }
        Err(e) => {
            assert!(matches!(e.status(), 400 | 413 | 431 | 501), "{e:?}");
        }
    }
}

/// The server's chunk encoder and its decoder agree.
fn round_trip(data: &[u8]) {
    let Ok(Chunks(chunks)) = Chunks::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut wire = Vec::new();
    for chunk in &chunks {
        write_chunk(&mut wire, chunk);
    }
    write_last_chunk(&mut wire);
    let expected: Vec<u8> = chunks.concat();
    let limits = Limits::default();
    let got = read_body(BodyFraming::Chunked, &wire, &limits);
    let framing_bytes = wire.len() - expected.len();
    if expected.len() <= limits.body_bytes_max
        && framing_bytes <= stentor::wire::http::CHUNKED_FRAMING_BYTES_MAX
    {
        assert_eq!(
            got,
            Ok(BodyStatus::Complete {
                body: expected,
                consumed: wire.len()
            })
        );
    } else {
        assert!(
            matches!(
                got,
                Err(HttpError::BodyTooLarge | HttpError::ChunkedFramingTooLarge)
            ),
            "{got:?}"
        );
    }
}

/// RFC 9112 7.1 read plainly, for bytes the server accepted: hex size,
/// anything up to CRLF (extensions), data, CRLF; size 0, then trailer lines
/// up to an empty one, which must end exactly at the end of `wire`.
fn reference_decode(wire: &[u8]) -> Option<Vec<u8>> {
    fn line(wire: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
        let rest = wire.get(*pos..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        *pos += end + 2;
        Some(rest[..end].to_vec())
    }
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let size_line = line(wire, &mut pos)?;
        let digits: Vec<u8> = size_line
            .iter()
            .copied()
            .take_while(u8::is_ascii_hexdigit)
            .collect();
        let size = usize::from_str_radix(std::str::from_utf8(&digits).ok()?, 16).ok()?;
        if size == 0 {
            break;
        }
        body.extend_from_slice(wire.get(pos..pos + size)?);
        pos += size;
        if wire.get(pos..pos + 2)? != b"\r\n" {
            return None;
        }
        pos += 2;
    }
    while !line(wire, &mut pos)?.is_empty() {}
    (pos == wire.len()).then_some(body)
}
