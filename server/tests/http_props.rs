//! Properties of `stentor::wire::http`: whatever bytes a client sends, the
//! parser answers (never panics), answers the same however the bytes are
//! split across reads, and decodes exactly what an encoder wrote.

use proptest::prelude::*;
use stentor::wire::http::{
    parse_form, parse_head, parse_query, read_body, write_chunk, write_last_chunk, BodyFraming,
    BodyStatus, HeadStatus, Limits,
};

fn small_limits() -> Limits {
    Limits {
        head_bytes_max: 512,
        headers_count_max: 8,
        uri_bytes_max: 128,
        body_bytes_max: 256,
    }
}

/// Bytes that look like HTTP often enough to reach the deeper branches.
fn http_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let atom = prop_oneof![
        Just(b"GET ".to_vec()),
        Just(b"POST /p?a=1 HTTP/1.1\r\n".to_vec()),
        Just(b"HTTP/1.0".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"Host: a\r\n".to_vec()),
        Just(b"Content-Length: ".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Expect: 100-continue\r\n".to_vec()),
        Just(b"Connection: close\r\n".to_vec()),
        Just(b"0\r\n\r\n".to_vec()),
        Just(b"ff;x=y\r\n".to_vec()),
        Just(b" \t:,;%\0".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(atom, 0..24).prop_map(|parts| parts.concat())
}

/// One valid request: its bytes, and the decoded body it carries.
fn valid_request() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("HEAD"),
        Just("OPTIONS"),
        Just("PURGE")
    ];
    let path = "(/[a-zA-Z0-9._~%-]{0,12}){1,4}";
    let query = proptest::option::of("[a-z0-9=&+%]{0,20}");
    let headers = proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,20}"), 0..5);
    let body = proptest::collection::vec(any::<u8>(), 0..200);
    let chunked = any::<bool>();
    let chunk_len = 1usize..64;
    (method, path, query, headers, body, chunked, chunk_len).prop_map(
        |(method, path, query, headers, body, chunked, chunk_len)| {
            let mut out = Vec::new();
            out.extend_from_slice(method.as_bytes());
            out.push(b' ');
            out.extend_from_slice(path.as_bytes());
            if let Some(query) = query {
                out.push(b'?');
                out.extend_from_slice(query.as_bytes());
            }
            out.extend_from_slice(b" HTTP/1.1\r\nHost: example\r\n");
            for (name, value) in &headers {
                // Our own framing headers are added below, exactly once.
                let reserved = ["host", "content-length", "transfer-encoding", "expect"];
                if reserved.iter().any(|r| name.eq_ignore_ascii_case(r)) {
                    continue;
                }
                out.extend_from_slice(format!("X-{name}: {}\r\n", value.trim()).as_bytes());
            }
            if chunked {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for piece in body.chunks(chunk_len) {
                    write_chunk(&mut out, piece);
                }
                write_last_chunk(&mut out);
            } else {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(&body);
            }
            (out, body)
        },
    )
}

/// Percent-encode everything but unreserved characters; space as `+`.
fn form_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parse_head_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        for limits in [Limits::default(), small_limits()] {
            if let Ok(HeadStatus::Complete { head_len, .. }) = parse_head(&bytes, &limits) {
                prop_assert!(head_len <= bytes.len());
                prop_assert!(head_len <= limits.head_bytes_max);
            }
        }
    }

    #[test]
    fn parse_head_never_panics_on_http_ish_bytes(bytes in http_ish_bytes()) {
        for limits in [Limits::default(), small_limits()] {
            match parse_head(&bytes, &limits) {
                Ok(HeadStatus::Complete { head, head_len }) => {
                    prop_assert!(head_len <= bytes.len());
                    // The body reader takes over from the head without panicking.
                    let _ = read_body(head.body, &bytes[head_len..], &limits);
                }
                Ok(HeadStatus::Partial) => prop_assert!(bytes.len() <= limits.head_bytes_max),
                Err(error) => prop_assert!(error.status() >= 400 && !error.reason().is_empty()),
            }
        }
    }

    #[test]
    fn read_body_never_panics(
        bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..1024), http_ish_bytes()],
        length in 0usize..400,
    ) {
        let limits = small_limits();
        for framing in [BodyFraming::None, BodyFraming::Length(length), BodyFraming::Chunked] {
            if let Ok(BodyStatus::Complete { body, consumed }) = read_body(framing, &bytes, &limits) {
                prop_assert!(consumed <= bytes.len());
                prop_assert!(body.len() <= limits.body_bytes_max);
                prop_assert!(body.len() <= consumed);
            }
        }
    }

    #[test]
    fn split_request_is_partial_then_the_same_complete((bytes, body) in valid_request()) {
        let limits = Limits::default();
        let whole = parse_head(&bytes, &limits);
        let Ok(HeadStatus::Complete { head, head_len }) = whole.clone() else {
            return Err(TestCaseError::fail(format!("{whole:?}")));
        };
        for cut in 0..bytes.len() {
            let got = parse_head(&bytes[..cut], &limits);
            if cut < head_len {
                prop_assert_eq!(got, Ok(HeadStatus::Partial), "cut {}", cut);
            } else {
                prop_assert_eq!(&got, &whole, "cut {}", cut);
            }
            // The body, fed the same way, is partial until its last byte.
            if cut >= head_len {
                let status = read_body(head.body, &bytes[head_len..cut], &limits);
                prop_assert_eq!(status, Ok(BodyStatus::Partial), "body cut {}", cut);
            }
        }
        let status = read_body(head.body, &bytes[head_len..], &limits);
        prop_assert_eq!(
            status,
            Ok(BodyStatus::Complete { body, consumed: bytes.len() - head_len })
        );
    }

    #[test]
    fn mutated_request_never_panics(
        (bytes, _) in valid_request(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        insert in any::<bool>(),
    ) {
        let mut bytes = bytes;
        let at = at.index(bytes.len());
        if insert { bytes.insert(at, byte) } else { bytes[at] = byte }
        let limits = Limits::default();
        if let Ok(HeadStatus::Complete { head, head_len }) = parse_head(&bytes, &limits) {
            let _ = read_body(head.body, &bytes[head_len..], &limits);
        }
    }

    #[test]
    fn parse_query_never_panics(query in "[ -~]{0,64}", raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_query(&query);
        let _ = parse_form(&raw);
    }

    #[test]
    fn query_round_trips(pairs in proptest::collection::vec((any::<String>(), any::<String>()), 0..6)) {
        let encoded: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect();
        let encoded = encoded.join("&");
        prop_assert_eq!(parse_query(&encoded), Ok(pairs.clone()));
        prop_assert_eq!(parse_form(encoded.as_bytes()), Ok(pairs));
    }
}
