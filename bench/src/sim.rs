//! Simulated devices that serve visitors themselves, many from one process:
//! a control socket (`/v1/control?name=…&http=1`), and for every `open` a
//! data socket (`/v1/data?session=…&stream=…`) answering HTTP/1.1 requests
//! from memory. Used by the `storm` and `soak` parts, where visitors must be
//! relayed through thousands of devices without a real agent process each.
//!
//! Pages: `GET /big` is [`BIG_BODY_BYTES`] sent in 32 KiB frames (visitors
//! abort it mid-body), anything else a short `200`. A request body is read
//! whole before the answer.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Body size of `GET /big`, in bytes: larger than loopback socket buffers,
/// so a visitor that stops reading aborts it mid-body.
pub const BIG_BODY_BYTES: usize = 4 << 20;

/// Body of every other page.
pub const PAGE: &[u8] = b"hello from a simulated device\n";

/// Largest frame a device writes (the protocol's recommendation).
const FRAME_BYTES: usize = 32 << 10;

/// Longest one handshake (control or data) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Read buffer of a control socket: it receives small JSON and pings.
const CONTROL_READ_BUFFER_BYTES: usize = 4096;

/// Read buffer of a data socket.
const DATA_READ_BUFFER_BYTES: usize = 16 << 10;

/// A WebSocket to the server.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the server's `welcome` told a device.
#[derive(Debug, Clone)]
pub struct Welcome {
    /// Session id, for data sockets.
    pub session: String,
    /// The device's subdomain (visitors use `<subdomain>.localhost`).
    pub subdomain: String,
}

/// Opens device `name`'s control socket and waits for `welcome`.
pub async fn open(server: SocketAddr, name: &str) -> anyhow::Result<(Socket, Welcome)> {
    timeout(HANDSHAKE_TIMEOUT, open_inner(server, name)).await.context("no welcome within 10 s")?
}

async fn open_inner(server: SocketAddr, name: &str) -> anyhow::Result<(Socket, Welcome)> {
    let url = format!("ws://{server}/v1/control?name={name}&http=1&agent=terrier-bench");
    let config = WebSocketConfig::default().read_buffer_size(CONTROL_READ_BUFFER_BYTES).write_buffer_size(0);
    let mut socket = connect(&url, config).await?;
    let frame = socket.next().await.context("closed before welcome")??;
    let Message::Text(text) = frame else { anyhow::bail!("expected welcome, got {frame:?}") };
    let json: serde_json::Value = serde_json::from_str(text.as_str())?;
    let welcome = &json["welcome"];
    let field = |key: &str| welcome[key].as_str().map(str::to_owned).with_context(|| format!("no {key} in {text}"));
    Ok((socket, Welcome { session: field("session")?, subdomain: field("subdomain")? }))
}

async fn connect(url: &str, config: WebSocketConfig) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("terrier.v1"));
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    Ok(socket)
}

/// How a device leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// A WebSocket close frame, then the TCP close.
    Clean,
    /// The TCP socket dropped without a close frame (a crash or a cut).
    Abrupt,
}

/// Serves the control socket (pings answered, one task per `open`) until
/// the server ends it or `until` completes; then leaves as `leave` says.
/// Returns whether `until` ended it (false: the server or the network did).
pub async fn serve(
    mut socket: Socket,
    server: SocketAddr,
    session: &str,
    until: impl std::future::Future<Output = Leave>,
) -> bool {
    tokio::pin!(until);
    loop {
        tokio::select! {
            leave = &mut until => {
                if leave == Leave::Clean {
                    let _ = timeout(Duration::from_secs(2), socket.close(None)).await;
                }
                return true;
            }
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Some(stream) = opened_stream(text.as_str()) {
                        let session = session.to_owned();
                        tokio::spawn(async move {
                            let _ = data_stream(server, &session, &stream).await;
                        });
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return false,
            },
        }
    }
}

/// The stream id of an `open` message.
fn opened_stream(text: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    json["open"]["stream"].as_str().map(str::to_owned)
}

/// One visitor connection: the data socket, answering requests until it ends.
async fn data_stream(server: SocketAddr, session: &str, stream: &str) -> anyhow::Result<()> {
    let url = format!("ws://{server}/v1/data?session={session}&stream={stream}");
    let config = WebSocketConfig::default().read_buffer_size(DATA_READ_BUFFER_BYTES).write_buffer_size(0);
    let mut socket = timeout(HANDSHAKE_TIMEOUT, connect(&url, config)).await.context("data handshake timed out")??;
    let mut pending = Vec::new();
    while let Some(frame) = socket.next().await {
        match frame? {
            // An empty frame is the server's half-close (PROTOCOL.md §4.2):
            // no more requests; end our side too, as an HTTP server does
            // at EOF.
            Message::Binary(bytes) if bytes.is_empty() => {
                socket.send(Message::binary(Vec::new())).await?;
                let _ = timeout(Duration::from_secs(2), socket.close(None)).await;
                return Ok(());
            }
            Message::Binary(bytes) => pending.extend_from_slice(&bytes),
            Message::Close(_) => break,
            _ => continue,
        }
        while let Some((path, used)) = whole_request(&pending)? {
            pending.drain(..used);
            if path == "/big" {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG_BODY_BYTES}\r\n\r\n");
                socket.send(Message::binary(head.into_bytes())).await?;
                let chunk = vec![b'x'; FRAME_BYTES];
                for _ in 0..BIG_BODY_BYTES / FRAME_BYTES {
                    socket.send(Message::binary(chunk.clone())).await?;
                }
            } else {
                let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", PAGE.len()).into_bytes();
                answer.extend_from_slice(PAGE);
                socket.send(Message::binary(answer)).await?;
            }
        }
    }
    Ok(())
}

/// The path of the first whole request (head and `Content-Length` body) in
/// `buf`, and its length; `None` while it is incomplete.
pub fn whole_request(buf: &[u8]) -> anyhow::Result<Option<(String, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        anyhow::ensure!(buf.len() < 64 << 10, "request head over 64 KiB");
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("request head is not UTF-8")?;
    let path = head.split_whitespace().nth(1).context("no path in the request line")?.to_owned();
    let length = content_length(head).unwrap_or(0);
    let total = end + 4 + length;
    Ok((buf.len() >= total).then_some((path, total)))
}

/// The `Content-Length` of a message head.
pub fn content_length(head: &str) -> Option<usize> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
}

/// Reconnect delays as the real agent draws them (`terrier-agent`'s
/// `reconnect.rs`): uniformly random below a ceiling that starts at `min`
/// and doubles per failed attempt up to `max` ("full jitter").
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Ceiling of the first delay.
    pub min: Duration,
    /// Ceiling of every delay.
    pub max: Duration,
}

impl Backoff {
    /// The agent's defaults: 500 ms, doubling to 60 s.
    pub const AGENT: Backoff = Backoff { min: Duration::from_millis(500), max: Duration::from_secs(60) };

    /// The delay before attempt `attempt` (0 = the first after a drop).
    pub fn delay(self, attempt: u32) -> Duration {
        let ceiling = self.min.saturating_mul(1u32 << attempt.min(20)).min(self.max);
        Duration::from_millis(rand::rng().random_range(0..=ceiling.as_millis() as u64))
    }
}

/// Connects device `name` as the agent does after a drop: sleep the
/// backoff delay, try, and on failure sleep a longer one; at most
/// `max_attempts`. Returns the socket, its welcome and the failed attempts.
pub async fn reconnect(
    server: SocketAddr,
    name: &str,
    backoff: Backoff,
    max_attempts: u32,
) -> anyhow::Result<(Socket, Welcome, u32)> {
    let mut last = None;
    for attempt in 0..max_attempts {
        tokio::time::sleep(backoff.delay(attempt)).await;
        match open(server, name).await {
            Ok((socket, welcome)) => return Ok((socket, welcome, attempt)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")).context(format!("{name}: gave up")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_whole_requests_with_bodies() {
        let get = b"GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n";
        assert_eq!(whole_request(get).unwrap(), Some(("/big".to_owned(), 30)));
        let post = b"POST /x HTTP/1.1\r\ncontent-length: 3\r\n\r\nab";
        assert_eq!(whole_request(post).unwrap(), None);
        let mut post = post.to_vec();
        post.push(b'c');
        assert_eq!(whole_request(&post).unwrap(), Some(("/x".to_owned(), post.len())));
    }

    #[test]
    fn reads_the_stream_of_an_open() {
        assert_eq!(opened_stream(r#"{"open":{"stream":"9b1e","service":"http"}}"#), Some("9b1e".to_owned()));
        assert_eq!(opened_stream(r#"{"go_away":{"after_ms":1}}"#), None);
    }

    #[test]
    fn backoff_ceiling_doubles_to_max() {
        let b = Backoff { min: Duration::from_millis(100), max: Duration::from_millis(300) };
        assert!((0..100).all(|_| b.delay(0) <= Duration::from_millis(100)));
        assert!((0..100).all(|_| b.delay(5) <= Duration::from_millis(300)));
    }
}
