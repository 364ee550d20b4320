//! Where an HTTP/1.1 message body ends (RFC 9112 §6), for the passthrough
//! ([`super::passthrough`]), which forwards bodies byte for byte and only
//! needs to know where the next head starts. Chunk sizes are read with
//! httparse; nothing is decoded or copied here.

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the sender closes (answers only).
    UntilClose,
}

/// The body is not valid chunked encoding, or a line of it is too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked body")]
pub struct InvalidBody;

/// Longest chunk-size line or trailer line accepted, in bytes.
const MAX_LINE: usize = 4096;
/// Most trailer bytes after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where the reader is inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Before the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one; bytes so far.
    Trailers(usize),
}

/// Follows one body through the bytes that carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body {
    /// What is left of it.
    left: Left,
}

/// What is left of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// This many bytes (`Content-Length`; 0: done).
    Bytes(u64),
    /// Chunked, at this point.
    Chunked(Chunk),
    /// Everything until the end of the connection.
    All,
    /// Done.
    Done,
}

impl Body {
    /// A body delimited by `framing`.
    pub fn new(framing: Framing) -> Self {
        let left = match framing {
            Framing::Empty | Framing::Length(0) => Left::Done,
            Framing::Length(n) => Left::Bytes(n),
            Framing::Chunked => Left::Chunked(Chunk::Size),
            Framing::UntilClose => Left::All,
        };
        Self { left }
    }

    /// Whether the whole body went by.
    pub fn is_done(&self) -> bool {
        self.left == Left::Done
    }

    /// Whether it ends only when the connection does.
    pub fn until_close(&self) -> bool {
        self.left == Left::All
    }

    /// Reads the body's part at the start of `buf`: returns how many bytes
    /// of `buf` belong to it. Fewer than `buf.len()` means the body ended
    /// there, or the rest is an incomplete chunk line (call again with
    /// more bytes appended).
    pub fn advance(&mut self, buf: &[u8]) -> Result<usize, InvalidBody> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match &mut self.left {
                Left::Done => return Ok(at),
                Left::All => return Ok(buf.len()),
                Left::Bytes(n) => {
                    let take = (*n).min(rest.len() as u64);
                    *n -= take;
                    at += take as usize;
                    if *n == 0 {
                        self.left = Left::Done;
                    }
                    return Ok(at);
                }
                Left::Chunked(chunk) => {
                    let Some((used, next)) = step(*chunk, rest)? else { return Ok(at) };
                    at += used;
                    self.left = next.map_or(Left::Done, Left::Chunked);
                }
            }
        }
    }
}

/// One step through a chunked body: bytes used and where it is then
/// (`None`: the body ended), or `None` when `rest` is too short to step.
fn step(chunk: Chunk, rest: &[u8]) -> Result<Option<(usize, Option<Chunk>)>, InvalidBody> {
    if rest.is_empty() {
        return Ok(None);
    }
    Ok(match chunk {
        Chunk::Size => match httparse::parse_chunk_size(rest).map_err(|_| InvalidBody)? {
            httparse::Status::Complete((used, 0)) => Some((used, Some(Chunk::Trailers(0)))),
            httparse::Status::Complete((used, size)) => Some((used, Some(Chunk::Data(size)))),
            httparse::Status::Partial if rest.len() > MAX_LINE => return Err(InvalidBody),
            httparse::Status::Partial => None,
        },
        Chunk::Data(left) => {
            let take = left.min(rest.len() as u64);
            let next = if take == left { Chunk::DataEnd } else { Chunk::Data(left - take) };
            Some((take as usize, Some(next)))
        }
        Chunk::DataEnd => match rest {
            [b'\r', b'\n', ..] => Some((2, Some(Chunk::Size))),
            [b'\r'] => None,
            _ => return Err(InvalidBody),
        },
        Chunk::Trailers(seen) => match rest.iter().position(|&b| b == b'\n') {
            // An empty line ends the trailers, and the body.
            Some(1) if rest[0] == b'\r' => Some((2, None)),
            Some(0) => return Err(InvalidBody),
            Some(end) if seen + end < MAX_TRAILERS => Some((end + 1, Some(Chunk::Trailers(seen + end + 1)))),
            None if rest.len() <= MAX_LINE && seen + rest.len() < MAX_TRAILERS => None,
            _ => return Err(InvalidBody),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `piece` bytes, as reads would bring it;
    /// returns the bytes the body took and whether it ended.
    fn feed(framing: Framing, input: &[u8], piece: usize) -> Result<(usize, bool), InvalidBody> {
        let mut body = Body::new(framing);
        let (mut buf, mut taken) = (Vec::new(), 0);
        for part in input.chunks(piece) {
            buf.extend_from_slice(part);
            let used = body.advance(&buf)?;
            taken += used;
            buf.drain(..used);
            if body.is_done() {
                break;
            }
        }
        Ok((taken, body.is_done()))
    }

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers_whatever_the_reads() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n";
        let next = b"GET /next HTTP/1.1\r\n\r\n";
        let input = [&body[..], &next[..]].concat();
        for piece in [1, 2, 3, 7, input.len()] {
            assert_eq!(feed(Framing::Chunked, &input, piece), Ok((body.len(), true)), "piece {piece}");
        }
        assert_eq!(feed(Framing::Chunked, b"0\r\n\r\n", 1), Ok((5, true)));
    }

    #[test]
    fn a_length_body_takes_its_bytes_and_no_more() {
        assert_eq!(feed(Framing::Length(4), b"abcdGET", 3), Ok((4, true)));
        assert_eq!(feed(Framing::Length(10), b"abc", 3), Ok((3, false)));
        assert_eq!(feed(Framing::Empty, b"GET", 3), Ok((0, true)));
        assert_eq!(feed(Framing::UntilClose, b"all of it", 2), Ok((9, false)));
    }

    #[test]
    fn broken_chunked_bodies_are_refused() {
        for bad in [&b"zz\r\n"[..], b"5\r\nhelloXY", b"0\r\n\n", b"5\r\nhello\r\n0\r\nX: 1\r\n\r"] {
            let last = feed(Framing::Chunked, bad, bad.len());
            assert!(matches!(last, Err(InvalidBody) | Ok((_, false))), "{bad:?}: {last:?}");
        }
        assert_eq!(feed(Framing::Chunked, b"zz\r\n", 4), Err(InvalidBody));
        assert_eq!(feed(Framing::Chunked, b"5\r\nhelloXY", 10), Err(InvalidBody));
        let endless = [&b"1"[..], &[b'0'; MAX_LINE + 1]].concat();
        assert_eq!(feed(Framing::Chunked, &endless, 512), Err(InvalidBody));
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..=MAX_TRAILERS / 8 {
            trailers.extend_from_slice(b"X: 123\r\n");
        }
        assert_eq!(feed(Framing::Chunked, &trailers, 1024), Err(InvalidBody));
    }
}
