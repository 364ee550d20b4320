//! A data socket seen as a plain byte stream (`AsyncRead` + `AsyncWrite`),
//! with the framing of [`crate::relay`]: binary frames carry bytes, an empty
//! binary frame is a half-close, a Close frame before the end is an abort.
//!
//! Why: the server's HTTP client speaks HTTP/1 to a device through a data
//! socket. Relaying between the socket and an in-memory pipe cost a copy and
//! a task hand-off per direction of every request; this adaptor lets the
//! client's connection task read and write the socket itself.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::relay::CLOSE_WAIT;

/// A data socket as a byte stream. Dropping it ends the stream from a
/// background task as [`crate::relay`] does (best effort, within
/// `CLOSE_WAIT`): the end of our direction, the rest of the peer's read and
/// dropped, then the Close handshake; so the peer sees a clean end rather
/// than an abort or a reset.
pub struct ByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// The socket; `None` only while dropping.
    ws: Option<WebSocketStream<S>>,
    /// Bytes of the last frame not yet read.
    unread: Bytes,
    /// The peer ended its direction (empty frame received).
    read_done: bool,
    /// We ended ours (empty frame sent).
    write_done: bool,
}

impl<S> ByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Wraps a data socket whose stream is ready to carry bytes.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self { ws: Some(ws), unread: Bytes::new(), read_done: false, write_done: false }
    }

    fn ws(&mut self) -> &mut WebSocketStream<S> {
        self.ws.as_mut().expect("socket present until drop")
    }

    /// Queues `frame` once the socket can take it (tungstenite writes it out
    /// at once; `poll_flush` finishes what the kernel did not take).
    fn poll_send(&mut self, cx: &mut Context<'_>, frame: Bytes) -> Poll<io::Result<()>> {
        ready!(Sink::<Message>::poll_ready(Pin::new(self.ws()), cx)).map_err(io_error)?;
        Poll::Ready(Pin::new(self.ws()).start_send(Message::Binary(frame)).map_err(io_error))
    }
}

/// A WebSocket error as the I/O error a byte stream reports.
fn io_error(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    match e {
        tokio_tungstenite::tungstenite::Error::Io(e) => e,
        other => io::Error::other(other),
    }
}

fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "data socket closed before the stream ended")
}

impl<S> AsyncRead for ByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.unread.is_empty() {
            if this.read_done {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(this.ws()).poll_next(cx)) {
                Some(Ok(Message::Binary(bytes))) if bytes.is_empty() => this.read_done = true,
                Some(Ok(Message::Binary(bytes))) => this.unread = bytes,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "text frame on a data socket")))
                }
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Err(aborted())),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S> AsyncWrite for ByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_done {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "stream already shut down")));
        }
        if buf.is_empty() {
            // An empty frame would mean end of stream.
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(terrier_proto::limits::DATA_CHUNK_BYTES);
        ready!(this.poll_send(cx, Bytes::copy_from_slice(&buf[..n])))?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<Message>::poll_flush(Pin::new(self.get_mut().ws()), cx).map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_done {
            ready!(this.poll_send(cx, Bytes::new()))?;
            this.write_done = true;
        }
        Sink::<Message>::poll_flush(Pin::new(this.ws()), cx).map_err(io_error)
    }
}

impl<S> Drop for ByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn drop(&mut self) {
        let Some(mut ws) = self.ws.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (write_done, mut read_done) = (self.write_done, self.read_done);
        runtime.spawn(async move {
            use futures_util::{SinkExt, StreamExt};
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                if !write_done {
                    ws.send(Message::Binary(Bytes::new())).await?;
                }
                while !read_done {
                    match ws.next().await {
                        Some(Ok(Message::Binary(bytes))) => read_done = bytes.is_empty(),
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(()),
                        Some(Ok(_)) => {}
                    }
                }
                ws.send(Message::Close(None)).await?;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                }
                Ok::<_, tokio_tungstenite::tungstenite::Error>(())
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn pair() -> (ByteStream<tokio::io::DuplexStream>, WebSocketStream<tokio::io::DuplexStream>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let ours = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let theirs = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        (ByteStream::new(ours), theirs)
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_half_close_is_an_empty_frame() {
        use futures_util::{SinkExt, StreamExt};
        let (mut stream, mut peer) = pair().await;
        stream.write_all(b"hello").await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(peer.next().await.unwrap().unwrap(), Message::Binary(Bytes::from_static(b"hello")));
        stream.shutdown().await.unwrap();
        assert_eq!(peer.next().await.unwrap().unwrap(), Message::Binary(Bytes::new()));

        peer.send(Message::Binary(Bytes::from_static(b"world"))).await.unwrap();
        peer.send(Message::Binary(Bytes::new())).await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"world");
    }

    #[tokio::test]
    async fn a_close_before_the_end_is_an_abort_not_an_eof() {
        use futures_util::SinkExt;
        let (mut stream, mut peer) = pair().await;
        peer.send(Message::Binary(Bytes::from_static(b"part"))).await.unwrap();
        peer.send(Message::Close(None)).await.unwrap();
        let mut got = Vec::new();
        let err = stream.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(got, b"part");
    }

    #[tokio::test]
    async fn dropping_ends_the_stream_cleanly_then_closes() {
        use futures_util::{SinkExt, StreamExt};
        let (stream, mut peer) = pair().await;
        drop(stream);
        async fn next(peer: &mut WebSocketStream<tokio::io::DuplexStream>) -> Message {
            let next = tokio::time::timeout(CLOSE_WAIT, peer.next()).await;
            next.expect("in time").expect("a frame").expect("no error")
        }
        assert_eq!(next(&mut peer).await, Message::Binary(Bytes::new()), "our direction ends first");
        // Bytes the peer still sends are read and dropped; its end of
        // stream lets the Close handshake follow.
        peer.send(Message::Binary(Bytes::from_static(b"late"))).await.unwrap();
        peer.send(Message::Binary(Bytes::new())).await.unwrap();
        assert!(next(&mut peer).await.is_close());
    }
}
