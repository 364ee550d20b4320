//! A load generator of idle devices: many control sockets from this one
//! process, each `GET /v1/control?name=bench-N&http=1` (HTTP only, so the
//! server binds no TCP port), held open and answering pings until dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Control handshakes in flight at once (keeps the listen backlog short).
const HANDSHAKES_AT_ONCE: usize = 64;

/// Longest one device may take from connect to its `welcome`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);

/// Read buffer of each simulated device, in bytes: they receive only pings.
const DEVICE_READ_BUFFER_BYTES: usize = 4096;

/// Devices held online; dropping this closes every control socket.
#[derive(Debug)]
pub struct Devices {
    /// One task per device, holding its socket; aborted on drop.
    _tasks: JoinSet<()>,
    /// Devices that got their `welcome`.
    pub online: usize,
    /// Why the first device that failed did so.
    pub first_error: Option<String>,
}

/// Connects `count` devices named `bench-0`… to `server`, at most
/// [`HANDSHAKES_AT_ONCE`] handshakes at a time; returns when every device
/// is welcomed or has failed, or when `deadline` has passed.
pub async fn connect(server: SocketAddr, count: usize, deadline: Duration) -> Devices {
    let until = Instant::now() + deadline;
    let (done, mut results) = mpsc::channel::<Result<(), String>>(count.max(1));
    let gate = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    let mut tasks = JoinSet::new();
    for index in 0..count {
        let (done, gate) = (done.clone(), gate.clone());
        tasks.spawn(async move {
            let Ok(permit) = gate.acquire_owned().await else { return };
            let opened = timeout(WELCOME_TIMEOUT, open(server, index)).await;
            drop(permit);
            match opened {
                Ok(Ok(socket)) => {
                    let _ = done.send(Ok(())).await;
                    hold(socket).await;
                }
                Ok(Err(e)) => {
                    let _ = done.send(Err(format!("bench-{index}: {e:#}"))).await;
                }
                Err(_) => {
                    let _ = done.send(Err(format!("bench-{index}: no welcome within {WELCOME_TIMEOUT:?}"))).await;
                }
            }
        });
    }
    drop(done);
    let (mut online, mut first_error) = (0, None);
    // Every task reports once; the held sockets keep their senders alive, so count.
    for _ in 0..count {
        match timeout_at(until, results.recv()).await {
            Ok(Some(Ok(()))) => online += 1,
            Ok(Some(Err(e))) => {
                first_error.get_or_insert(e);
            }
            Ok(None) | Err(_) => break,
        }
    }
    if online < count && first_error.is_none() {
        first_error = Some(format!("only {online} of {count} devices online after {deadline:?}"));
    }
    Devices { _tasks: tasks, online, first_error }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens one control socket and waits for the server's `welcome`.
async fn open(server: SocketAddr, index: usize) -> anyhow::Result<Socket> {
    let url = format!("ws://{server}/v1/control?name=bench-{index}&http=1&agent=terrier-bench");
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("terrier.v1"));
    let config = WebSocketConfig::default().read_buffer_size(DEVICE_READ_BUFFER_BYTES).write_buffer_size(0);
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    match socket.next().await.context("closed before welcome")?? {
        Message::Text(text) if text.contains("\"welcome\"") => Ok(socket),
        other => anyhow::bail!("expected welcome, got {other:?}"),
    }
}

/// Reads (and so answers pings) until the socket ends or the task is aborted.
async fn hold(mut socket: Socket) {
    while let Some(Ok(_)) = socket.next().await {}
}
