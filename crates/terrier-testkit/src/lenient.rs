//! [`LenientDevice`]: a device's web service that parses HTTP/1.1 as loosely
//! as the servers request smuggling preys on (Go's net/http before 1.23.8,
//! small embedded servers), so a test can see what a proxy's bytes mean to
//! such a device. It records every request it parses, on which connection,
//! and answers each with `seen <method> <path> #<n>`.
//!
//! Its leniencies, each one a way to read a message differently from a
//! strict parser:
//! - a line ends at LF; a CR before it is dropped, a CR anywhere else is an
//!   ordinary byte (so a bare LF inside a chunk extension ends the chunk-size
//!   line);
//! - empty lines before a request line and before a chunk-size line are
//!   skipped;
//! - a header name is trimmed (`Transfer-Encoding : chunked` counts), a line
//!   starting with a space or tab continues the previous header (obs-fold),
//!   a line without a colon is ignored;
//! - `Transfer-Encoding` is chunked when any of its tokens in any of its
//!   headers is `chunked`, and then wins over `Content-Length`; otherwise
//!   the first parsable `Content-Length` counts;
//! - chunk sizes wrap past 64 bits, as a C server's unsigned arithmetic does;
//! - after the last chunk, a line that is not `name: value` is not a
//!   trailer: the body ended before it, and it starts the next request.
//!
//! Two paths behave differently on purpose: [`HANG_UP_PATH`] reads the
//! request and closes without answering, and [`HTTP10_PATH`] answers
//! `HTTP/1.0` with no length and closes (a close-delimited body).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request to this path (or one below it) is recorded, then the
/// connection closes without an answer.
pub const HANG_UP_PATH: &str = "/open-door";
/// A request to this path gets an `HTTP/1.0` answer without
/// `Content-Length` of [`HTTP10_BODY_BYTES`], ended by closing.
pub const HTTP10_PATH: &str = "/http10";
/// Length of the close-delimited body at [`HTTP10_PATH`]: the `seen` line,
/// padded with dots, so it spans several reads.
pub const HTTP10_BODY_BYTES: usize = 100_000;

/// Longest line read, in bytes.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Most header lines in a head.
const MAX_HEADERS: usize = 100;
/// Largest body (or chunk) accepted, in bytes.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A request the device parsed whole.
#[derive(Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// 1-based, in the order the device parsed requests on any connection.
    pub number: usize,
    /// 1-based, in the order the device accepted connections.
    pub connection: usize,
    /// The method, as sent.
    pub method: String,
    /// The request target, as sent.
    pub target: String,
    /// Header names and values, trimmed, in order.
    pub headers: Vec<(String, String)>,
    /// The body as the device decoded it.
    pub body: Vec<u8>,
}

impl SeenRequest {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(path, _)| path)
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The body as text, so a smuggled request in it reads as one in a message.
impl std::fmt::Debug for SeenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenRequest")
            .field("number", &self.number)
            .field("connection", &self.connection)
            .field("method", &self.method)
            .field("target", &self.target)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

/// What the device saw.
#[derive(Debug, Default)]
struct Seen {
    /// Requests parsed whole, in order.
    requests: Vec<SeenRequest>,
    /// Why it gave up on a connection (a malformed message, or the peer
    /// closing in the middle of one), with the connection's number.
    refusals: Vec<String>,
    /// Connections accepted so far.
    connections: usize,
}

/// A running lenient device service on 127.0.0.1; stops with the runtime.
#[derive(Clone)]
pub struct LenientDevice {
    /// Where it listens: the agent's `--http` target.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl LenientDevice {
    /// Starts it on a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind lenient device");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let connection = {
                    let mut seen = shared.lock().expect("seen lock");
                    seen.connections += 1;
                    seen.connections
                };
                tokio::spawn(serve(tcp, connection, shared.clone()));
            }
        });
        Self { addr, seen }
    }

    /// Every request parsed so far, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("seen lock").requests.clone()
    }

    /// Why connections were given up so far (see [`Seen::refusals`]).
    pub fn refusals(&self) -> Vec<String> {
        self.seen.lock().expect("seen lock").refusals.clone()
    }
}

/// Serves one connection: requests one after another until it closes, a
/// request asks to close, or a message cannot be read.
async fn serve(tcp: TcpStream, connection: usize, seen: Arc<Mutex<Seen>>) {
    let mut wire = Wire { tcp, buf: Vec::new() };
    loop {
        let request = match read_request(&mut wire).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(why) => {
                seen.lock().expect("seen lock").refusals.push(format!("connection {connection}: {why}"));
                let refusal = "HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\nlenient 400";
                let _ = wire.tcp.write_all(refusal.as_bytes()).await;
                return;
            }
        };
        let closes = request.closes;
        let recorded = {
            let mut seen = seen.lock().expect("seen lock");
            let number = seen.requests.len() + 1;
            let recorded = SeenRequest { number, connection, ..request.seen };
            seen.requests.push(recorded.clone());
            recorded
        };
        let text = format!("seen {} {} #{}", recorded.method, recorded.path(), recorded.number);
        let answer = match recorded.path() {
            path if path.starts_with(HANG_UP_PATH) => return,
            HTTP10_PATH => {
                let mut body = text.into_bytes();
                body.resize(HTTP10_BODY_BYTES.max(body.len()), b'.');
                let mut answer = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
                answer.extend_from_slice(&body);
                let _ = wire.tcp.write_all(&answer).await;
                let _ = wire.tcp.shutdown().await;
                return;
            }
            _ => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{text}",
                text.len(),
                if closes { "Connection: close\r\n" } else { "" },
            ),
        };
        if wire.tcp.write_all(answer.as_bytes()).await.is_err() || closes {
            let _ = wire.tcp.shutdown().await;
            return;
        }
    }
}

/// A request as read, before it is numbered.
struct Parsed {
    /// The request (`number` and `connection` still 0).
    seen: SeenRequest,
    /// It asked to close the connection after its answer.
    closes: bool,
}

/// Reads the next request; `None` when the connection ends between
/// requests, `Err` saying what was malformed or cut.
async fn read_request(wire: &mut Wire) -> Result<Option<Parsed>, String> {
    let line = loop {
        match wire.line().await? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue,
            Some(line) => break line,
        }
    };
    let words: Vec<&[u8]> = line.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty()).collect();
    let [method, target, version] = words[..] else {
        return Err(format!("not a request line: {:?}", String::from_utf8_lossy(&line)));
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let (method, target, version) = (text(method), text(target), text(version));
    let headers = read_headers(wire).await?;
    let values = |name: &str| {
        headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect::<Vec<_>>()
    };
    let chunked =
        values("transfer-encoding").iter().flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case("chunked"));
    let length = values("content-length").iter().find_map(|v| v.trim().parse::<usize>().ok());
    let body = match (chunked, length) {
        (true, _) => read_chunked(wire).await?,
        (false, Some(n)) if n > MAX_BODY_BYTES => return Err(format!("Content-Length {n} too large")),
        (false, Some(n)) => wire.take(n).await?,
        (false, None) => Vec::new(),
    };
    let connection = values("connection").join(",").to_ascii_lowercase();
    let closes = if version.eq_ignore_ascii_case("HTTP/1.0") {
        !connection.contains("keep-alive")
    } else {
        connection.split(',').any(|t| t.trim() == "close")
    };
    let seen = SeenRequest { number: 0, connection: 0, method, target, headers, body };
    Ok(Some(Parsed { seen, closes }))
}

/// Reads header lines up to the empty line that ends a head.
async fn read_headers(wire: &mut Wire) -> Result<Vec<(String, String)>, String> {
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let line = wire.line().await?.ok_or("closed in the middle of a head")?;
        if line.is_empty() {
            return Ok(headers);
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        if line.starts_with([' ', '\t']) {
            // obs-fold: the previous header goes on.
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        if headers.len() > MAX_HEADERS {
            return Err("too many headers".into());
        }
    }
}

/// Reads a chunked body (and its trailers), decoded.
async fn read_chunked(wire: &mut Wire) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line = wire.line().await?.ok_or("closed before a chunk size")?;
        if line.is_empty() {
            continue;
        }
        let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        let size = parse_hex_wrapping(digits)
            .ok_or_else(|| format!("bad chunk size line {:?}", String::from_utf8_lossy(&line)))?;
        if size == 0 {
            break;
        }
        if size > MAX_BODY_BYTES as u64 || body.len() + size as usize > MAX_BODY_BYTES {
            return Err(format!("chunk of {size} bytes too large"));
        }
        body.extend(wire.take(size as usize).await?);
        let end = wire.line().await?.ok_or("closed after chunk data")?;
        if !end.is_empty() {
            return Err(format!("chunk data followed by {:?}", String::from_utf8_lossy(&end)));
        }
    }
    // Trailers: only `name: value` lines; anything else is the next request's.
    while let Some((line, raw_len)) = wire.peek_line().await? {
        if line.is_empty() {
            wire.consume(raw_len);
            break;
        }
        if !line.contains(&b':') {
            break;
        }
        wire.consume(raw_len);
    }
    Ok(body)
}

/// Hex digits as a number, wrapping past 64 bits; `None` for no digits or
/// a non-hex byte.
fn parse_hex_wrapping(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |size, &b| {
        let digit = (b as char).to_digit(16)?;
        Some(size.wrapping_mul(16).wrapping_add(u64::from(digit)))
    })
}

/// One connection's bytes, read as lines and byte counts.
struct Wire {
    tcp: TcpStream,
    /// Read and not yet used.
    buf: Vec<u8>,
}

impl Wire {
    /// Reads more into `buf`; `false` at the end of the connection.
    async fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 16 * 1024];
        match self.tcp.read(&mut chunk).await {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) => Err(format!("read failed: {e}")),
        }
    }

    /// The next line without its end (LF, and a CR just before it) and its
    /// length with the end, left in the buffer; `None` when the connection
    /// ended with nothing buffered.
    async fn peek_line(&mut self) -> Result<Option<(Vec<u8>, usize)>, String> {
        loop {
            if let Some(lf) = self.buf.iter().position(|&b| b == b'\n') {
                let line = &self.buf[..lf];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return Ok(Some((line.to_vec(), lf + 1)));
            }
            if self.buf.len() > MAX_LINE_BYTES {
                return Err("line too long".into());
            }
            if !self.fill().await? {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(format!("closed in the middle of a line: {:?}", String::from_utf8_lossy(&self.buf))),
                };
            }
        }
    }

    /// Drops `n` bytes from the front of the buffer.
    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
    }

    /// The next line (see [`Self::peek_line`]), taken.
    async fn line(&mut self) -> Result<Option<Vec<u8>>, String> {
        let Some((line, raw_len)) = self.peek_line().await? else { return Ok(None) };
        self.consume(raw_len);
        Ok(Some(line))
    }

    /// The next `n` bytes.
    async fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(format!("closed {} bytes into a body of {n}", self.buf.len()));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_wrap_past_64_bits() {
        assert_eq!(parse_hex_wrapping(b"1a"), Some(26));
        assert_eq!(parse_hex_wrapping(b"10000000000000005"), Some(5));
        assert_eq!(parse_hex_wrapping(b""), None);
        assert_eq!(parse_hex_wrapping(b"5x"), None);
    }
}
