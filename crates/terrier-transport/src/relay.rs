//! Relays bytes between a data socket (a WebSocket) and a byte stream (a
//! visitor's TCP connection, a local service, an in-memory pipe).
//!
//! Framing on a data socket: every binary frame carries bytes of the stream;
//! an **empty** binary frame means "no more bytes in this direction" (a TCP
//! half-close, `shutdown(SHUT_WR)`); a Close frame ends the socket. A Close or
//! a broken socket before both directions finished is an abort: the byte
//! stream is dropped so its peer sees the connection end abruptly rather than
//! a clean end of data it never fully received.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use terrier_proto::limits::DATA_CHUNK_BYTES;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// How long a finished relay waits for the peer's Close frame before it drops
/// the socket anyway.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Bytes moved by one relay, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayStats {
    /// Bytes read from the byte stream and sent into the data socket.
    pub to_socket: u64,
    /// Bytes received from the data socket and written to the byte stream.
    pub from_socket: u64,
}

/// Why a relay ended before both directions finished cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The byte stream failed (reset by the visitor or the local service).
    #[error("byte stream: {0}")]
    Io(#[from] std::io::Error),
    /// The data socket failed or broke the protocol.
    #[error("data socket: {0}")]
    Socket(#[from] tungstenite::Error),
    /// The peer closed the data socket before ending its direction.
    #[error("data socket closed before the stream ended")]
    Aborted,
    /// The peer sent a text frame where only bytes belong.
    #[error("unexpected text frame on a data socket")]
    UnexpectedText,
}

/// Relays until both directions have ended; returns the byte counts.
///
/// Errors abort both directions at once: the first failure drops the other
/// direction's future, and the caller drops both ends.
pub async fn relay<S, T>(ws: WebSocketStream<S>, io: T) -> Result<RelayStats, RelayError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let (mut reader, mut writer) = tokio::io::split(io);

    let upstream = async {
        let mut sent = 0u64;
        let mut buf = BytesMut::with_capacity(DATA_CHUNK_BYTES);
        loop {
            buf.reserve(DATA_CHUNK_BYTES);
            let n = reader.read_buf(&mut buf).await?;
            if n == 0 {
                sink.send(Message::Binary(Bytes::new())).await?;
                return Ok::<_, RelayError>(sent);
            }
            sent += n as u64;
            sink.send(Message::Binary(buf.split().freeze())).await?;
        }
    };
    let downstream = async {
        let mut received = 0u64;
        while let Some(msg) = stream.next().await {
            match msg? {
                Message::Binary(bytes) if bytes.is_empty() => {
                    writer.shutdown().await?;
                    return Ok::<_, RelayError>(received);
                }
                Message::Binary(bytes) => {
                    received += bytes.len() as u64;
                    writer.write_all(&bytes).await?;
                }
                Message::Text(_) => return Err(RelayError::UnexpectedText),
                Message::Close(_) => return Err(RelayError::Aborted),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
        Err(RelayError::Aborted)
    };
    let (to_socket, from_socket) = tokio::try_join!(upstream, downstream)?;

    // Both directions ended cleanly: close the socket and give the peer's
    // Close a moment to arrive so neither side sees a reset.
    let _ = sink.send(Message::Close(None)).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(msg)) = stream.next().await {
            if msg.is_close() {
                break;
            }
        }
    })
    .await;
    Ok(RelayStats { to_socket, from_socket })
}
