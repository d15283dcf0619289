//! The client side of HTTP/1.1 the load generator needs: parse a response
//! head, and undo chunked transfer coding incrementally. Pure, no I/O.

/// Largest response head we accept; beyond it the server is misbehaving.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Header lines parsed per response head.
const HEADERS_MAX: usize = 64;

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Bytes of the head, including the blank line.
    pub len: usize,
    pub chunked: bool,
    pub content_length: Option<u64>,
    pub event_stream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    Malformed,
    TooLarge,
}

/// Parse a response head from the start of `buf`. `Ok(None)`: need more bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let mut chunked = false;
            let mut content_length = None;
            let mut event_stream = false;
            for h in resp.headers.iter() {
                let value = std::str::from_utf8(h.value).unwrap_or("").trim();
                if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.to_ascii_lowercase().ends_with("chunked");
                } else if h.name.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse().ok();
                } else if h.name.eq_ignore_ascii_case("content-type") {
                    event_stream = value.to_ascii_lowercase().starts_with("text/event-stream");
                }
            }
            Ok(Some(Head {
                status: resp.code.unwrap_or(0),
                len,
                chunked,
                content_length,
                event_stream,
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() > HEAD_BYTES_MAX => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// Incremental decoder for `Transfer-Encoding: chunked`. Hands the payload
/// bytes to a callback as borrowed slices of the input (no copy).
#[derive(Debug, Default, Clone)]
pub struct Dechunker {
    state: ChunkState,
    /// Payload bytes left in the current chunk.
    remaining: u64,
    /// Chunk-size digits seen on the current size line (bound: 16 hex digits).
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// After the size: extensions up to LF.
    SizeLineRest,
    Data,
    /// CR LF after a chunk's data.
    DataEnd,
    /// Zero-size chunk seen: trailers follow, the body is over.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    Malformed,
}

impl Dechunker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the terminating zero-size chunk has been seen.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decode `input`, calling `out` with each run of payload bytes.
    pub fn feed(&mut self, mut input: &[u8], mut out: impl FnMut(&[u8])) -> Result<(), ChunkError> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Size => {
                    let b = input[0];
                    input = &input[1..];
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            if self.digits >= 16 {
                                return Err(ChunkError::Malformed);
                            }
                            let v = (b as char).to_digit(16).unwrap_or(0) as u64;
                            self.remaining = self.remaining * 16 + v;
                            self.digits += 1;
                        }
                        b'\r' | b';' | b' ' | b'\t' if self.digits > 0 => {
                            self.state = ChunkState::SizeLineRest
                        }
                        b'\n' if self.digits > 0 => self.end_size_line(),
                        _ => return Err(ChunkError::Malformed),
                    }
                }
                ChunkState::SizeLineRest => match input.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        input = &input[i + 1..];
                        self.end_size_line();
                    }
                    None => input = &[],
                },
                ChunkState::Data => {
                    let n = (self.remaining.min(input.len() as u64)) as usize;
                    out(&input[..n]);
                    input = &input[n..];
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    let b = input[0];
                    input = &input[1..];
                    match b {
                        b'\r' => {}
                        b'\n' => {
                            self.state = ChunkState::Size;
                            self.digits = 0;
                            self.remaining = 0;
                        }
                        _ => return Err(ChunkError::Malformed),
                    }
                }
                ChunkState::Done => return Ok(()),
            }
        }
        Ok(())
    }

    fn end_size_line(&mut self) {
        self.state = if self.remaining == 0 {
            ChunkState::Done
        } else {
            ChunkState::Data
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_parses_status_and_coding() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nabc";
        let h = parse_head(raw).expect("valid").expect("complete");
        assert_eq!(h.status, 200);
        assert!(h.chunked && h.event_stream);
        assert_eq!(&raw[h.len..], b"abc");
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        assert_eq!(parse_head(b"garbage\r\n\r\n"), Err(HeadError::Malformed));
    }

    #[test]
    fn dechunk_any_split() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..body.len() {
            let mut d = Dechunker::new();
            let mut got = Vec::new();
            d.feed(&body[..split], |b| got.extend_from_slice(b))
                .expect("valid");
            d.feed(&body[split..], |b| got.extend_from_slice(b))
                .expect("valid");
            assert_eq!(got, b"hello, world", "split at {split}");
            assert!(d.is_done());
        }
    }

    #[test]
    fn dechunk_rejects_garbage() {
        let mut d = Dechunker::new();
        assert_eq!(d.feed(b"zz\r\n", |_| {}), Err(ChunkError::Malformed));
        let mut d = Dechunker::new();
        assert_eq!(d.feed(b"1\r\nab", |_| {}), Err(ChunkError::Malformed));
    }
}
