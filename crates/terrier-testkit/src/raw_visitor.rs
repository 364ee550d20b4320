//! [`RawVisitor`]: a visitor that writes HTTP/1.1 by hand on a plain TCP
//! socket, so a test sends exactly the bytes it means (malformed framing,
//! pipelined requests), and reads the answers one by one, each within a
//! deadline. Failures are returned as text for the test's own message.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Most header lines in an answer head.
const MAX_HEADERS: usize = 64;
/// Bytes of an unfinished answer shown in an error.
const PREVIEW_BYTES: usize = 200;

/// One answer as read off the wire.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// HTTP minor version of the status line (`0` for HTTP/1.0).
    pub version: u8,
    /// Status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A visitor's raw connection; bytes read past one answer stay for the next.
pub struct RawVisitor {
    tcp: TcpStream,
    buf: Vec<u8>,
    /// The server closed its side.
    closed: bool,
}

impl RawVisitor {
    /// Connects to `server`.
    pub async fn connect(server: SocketAddr) -> Self {
        let tcp = TcpStream::connect(server).await.expect("connect to the server");
        Self { tcp, buf: Vec::new(), closed: false }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.tcp.write_all(bytes).await.map_err(|e| format!("write failed: {e}"))
    }

    /// Reads more bytes before `deadline`; `false` when the server closed.
    async fn fill(&mut self, deadline: Instant) -> Result<bool, String> {
        if self.closed {
            return Ok(false);
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
            Err(_) => Err(format!("no complete answer in time; have {}", self.preview())),
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.closed = true;
                Ok(false)
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
        }
    }

    /// Waits for `n` buffered bytes.
    async fn want(&mut self, n: usize, deadline: Instant) -> Result<(), String> {
        while self.buf.len() < n {
            if !self.fill(deadline).await? {
                return Err(format!("closed with {} of {n} bytes: {}", self.buf.len(), self.preview()));
            }
        }
        Ok(())
    }

    /// The buffered bytes for a message: the first [`PREVIEW_BYTES`] as
    /// text, and how many there are.
    fn preview(&self) -> String {
        let shown = String::from_utf8_lossy(&self.buf[..self.buf.len().min(PREVIEW_BYTES)]).into_owned();
        format!("{shown:?} ({} bytes)", self.buf.len())
    }

    /// The next answer, whole, within `within`: its body delimited by
    /// `Content-Length`, chunked, or (neither) the server closing. `Ok(None)`
    /// when the server closed before any byte of it.
    pub async fn answer(&mut self, within: Duration) -> Result<Option<RawAnswer>, String> {
        let deadline = Instant::now() + within;
        let (len, version, status, headers) = loop {
            let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut head = httparse::Response::new(&mut parsed);
            match head.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let headers = head
                        .headers
                        .iter()
                        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect::<Vec<_>>();
                    break (len, head.version.unwrap_or(1), head.code.unwrap_or(0), headers);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(format!("not an answer head ({e}): {}", self.preview())),
            }
            if !self.fill(deadline).await? {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(format!("closed in the middle of an answer head: {}", self.preview())),
                };
            }
        };
        self.buf.drain(..len);
        let value = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let body = if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else if value("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
            self.chunked_body(deadline).await?
        } else if let Some(length) = value("content-length") {
            let length: usize = length.trim().parse().map_err(|_| format!("bad Content-Length {length:?}"))?;
            self.want(length, deadline).await?;
            self.buf.drain(..length).collect()
        } else {
            while self.fill(deadline).await? {}
            std::mem::take(&mut self.buf)
        };
        Ok(Some(RawAnswer { version, status, headers, body }))
    }

    /// A chunked body, strictly CRLF-framed, de-chunked.
    async fn chunked_body(&mut self, deadline: Instant) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                if !self.fill(deadline).await? {
                    return Err(format!("closed in a chunked answer: {}", self.preview()));
                }
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let digits = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(digits, 16).map_err(|_| format!("bad chunk size line {line:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                let end = loop {
                    if let Some(at) = self.buf[line_end..].windows(4).position(|w| w == b"\r\n\r\n") {
                        break line_end + at + 4;
                    }
                    if !self.fill(deadline).await? {
                        return Err("closed in the trailers".into());
                    }
                };
                self.buf.drain(..end);
                return Ok(body);
            }
            self.want(line_end + 2 + size + 2, deadline).await?;
            body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            self.buf.drain(..line_end + 2 + size + 2);
        }
    }

    /// Answers until the server closes, at most `max` of them, all within
    /// `within`; the error says what went wrong after the answers read.
    pub async fn answers(&mut self, max: usize, within: Duration) -> (Vec<RawAnswer>, Option<String>) {
        let deadline = Instant::now() + within;
        let mut answers = Vec::new();
        while answers.len() < max {
            match self.answer(deadline.saturating_duration_since(Instant::now())).await {
                Ok(Some(answer)) => answers.push(answer),
                Ok(None) => break,
                Err(e) => return (answers, Some(e)),
            }
        }
        (answers, None)
    }
}
