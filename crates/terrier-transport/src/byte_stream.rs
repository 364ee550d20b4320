//! A data socket seen as a plain byte stream (`AsyncRead` + `AsyncWrite`),
//! with the framing of [`crate::relay`](mod@crate::relay): binary frames carry bytes, an empty
//! binary frame is a half-close, a Close frame before the end is an abort.
//!
//! Why: the server's HTTP client speaks HTTP/1 to a device through a data
//! socket. Relaying between the socket and an in-memory pipe cost a copy and
//! a task hand-off per direction of every request; this adaptor lets the
//! client's connection task read and write the socket itself.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use fastwebsockets::{OpCode, WebSocketError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::data::{self, DataSocket, Event, Inbound, Reader, Writer, CLOSE_WAIT};
/// A frame read: opcode, FIN bit, payload.
type Read = Result<(OpCode, bool, BytesMut), WebSocketError>;
/// A frame being read; it owns the reading half and gives it back.
type Reading<S> = Pin<Box<dyn Future<Output = (Reader<S>, Read)> + Send>>;
/// A frame being written; it owns the writing half and the frame buffer.
type Writing<S> = Pin<Box<dyn Future<Output = (Writer<S>, Vec<u8>, Result<(), WebSocketError>)> + Send>>;

/// The reading side: idle, or a frame on its way.
enum ReadSide<S> {
    /// No read in progress.
    Idle(Reader<S>),
    /// A read in progress (kept across polls: reading a frame is not
    /// cancel-safe).
    Busy(Reading<S>),
    /// Broken or dropped.
    Gone,
}

/// The writing side: idle with its reusable frame buffer, or a frame on
/// its way out.
enum WriteSide<S> {
    /// No write in progress.
    Idle(Writer<S>, Vec<u8>),
    /// A write (and flush) in progress.
    Busy(Writing<S>),
    /// Broken or dropped.
    Gone,
}

/// A data socket as a byte stream. Dropping it ends the stream from a
/// background task as [`crate::relay()`] does (best effort, within
/// `CLOSE_WAIT`): the end of our direction, the rest of the peer's read and
/// dropped, then the Close handshake; so the peer sees a clean end rather
/// than an abort or a reset.
///
/// Reads hand out the frame payloads fastwebsockets read (one copy, into
/// the caller's buffer). A write copies the caller's bytes once into the
/// frame buffer, as `poll_write` only borrows them and the frame goes out
/// after it returns.
pub struct ByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// The reading half.
    read: ReadSide<S>,
    /// The writing half.
    write: WriteSide<S>,
    /// Message framing of what we read.
    inbound: Inbound,
    /// Bytes of the last frame not yet read.
    unread: BytesMut,
    /// The peer ended its direction (empty frame received).
    read_done: bool,
    /// We ended ours (empty frame sent).
    write_done: bool,
}

async fn read_frame<S>(mut reader: Reader<S>) -> (Reader<S>, Read)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let read = reader
        .read_frame(&mut data::drop_obligation)
        .await
        .map(|frame| (frame.opcode, frame.fin, data::into_bytes(frame.payload)));
    (reader, read)
}

/// Writes a binary frame of `buf` (empty: the end of our direction) and
/// flushes.
async fn write_frame<S>(mut writer: Writer<S>, mut buf: Vec<u8>) -> (Writer<S>, Vec<u8>, Result<(), WebSocketError>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let written = data::send(&mut writer, data::binary(&mut buf)).await;
    (writer, buf, written)
}

impl<S> ByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Wraps a data socket whose stream is ready to carry bytes.
    pub fn new(socket: DataSocket<S>) -> Self {
        let inbound = Inbound::new(socket.max_message_bytes);
        Self {
            read: ReadSide::Idle(socket.rd),
            write: WriteSide::Idle(socket.wr, Vec::new()),
            inbound,
            unread: BytesMut::new(),
            read_done: false,
            write_done: false,
        }
    }

    /// Finishes the write in progress, if any.
    fn poll_write_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.write {
            WriteSide::Idle(..) => Poll::Ready(Ok(())),
            WriteSide::Gone => Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "data socket broken"))),
            WriteSide::Busy(writing) => {
                let (writer, buf, written) = ready!(writing.as_mut().poll(cx));
                match written {
                    Ok(()) => {
                        self.write = WriteSide::Idle(writer, buf);
                        Poll::Ready(Ok(()))
                    }
                    Err(e) => {
                        self.write = WriteSide::Gone;
                        Poll::Ready(Err(io_error(e)))
                    }
                }
            }
        }
    }

    /// Starts sending `bytes` as one frame (empty: the end of our
    /// direction) once the previous frame is out. Ready once the frame is
    /// accepted; `poll_flush` finishes what the kernel did not take yet.
    fn poll_send(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<()>> {
        ready!(self.poll_write_idle(cx))?;
        let WriteSide::Idle(writer, mut buf) = std::mem::replace(&mut self.write, WriteSide::Gone) else {
            unreachable!("poll_write_idle returned Ready(Ok)")
        };
        buf.clear();
        buf.extend_from_slice(bytes);
        self.write = WriteSide::Busy(Box::pin(write_frame(writer, buf)));
        // Start the write now; a pending one is finished by the next write
        // or flush.
        match self.poll_write_idle(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// A WebSocket error as the I/O error a byte stream reports.
fn io_error(e: WebSocketError) -> io::Error {
    match e {
        WebSocketError::IoError(e) => e,
        WebSocketError::UnexpectedEOF => aborted(),
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
            let reading = match &mut this.read {
                ReadSide::Busy(reading) => reading,
                ReadSide::Gone => return Poll::Ready(Err(aborted())),
                ReadSide::Idle(_) => {
                    let ReadSide::Idle(reader) = std::mem::replace(&mut this.read, ReadSide::Gone) else {
                        unreachable!("matched Idle")
                    };
                    this.read = ReadSide::Busy(Box::pin(read_frame(reader)));
                    let ReadSide::Busy(reading) = &mut this.read else { unreachable!("just set") };
                    reading
                }
            };
            let (reader, read) = ready!(reading.as_mut().poll(cx));
            this.read = ReadSide::Idle(reader);
            let event = read.map_err(io_error).and_then(|(opcode, fin, payload)| {
                let event = this.inbound.classify(opcode, fin, payload.len());
                this.unread = payload;
                event.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
            });
            match event {
                Ok(Event::Bytes) => {}
                Ok(Event::End) => this.read_done = true,
                Ok(Event::Skip) => this.unread.clear(),
                Ok(Event::Close) => {
                    this.read = ReadSide::Gone;
                    return Poll::Ready(Err(aborted()));
                }
                Err(e) => {
                    this.read = ReadSide::Gone;
                    return Poll::Ready(Err(e));
                }
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
        ready!(this.poll_send(cx, &buf[..n]))?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_write_idle(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_done {
            ready!(this.poll_send(cx, &[]))?;
            this.write_done = true;
        }
        this.poll_write_idle(cx)
    }
}

impl<S> Drop for ByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn drop(&mut self) {
        let read = std::mem::replace(&mut self.read, ReadSide::Gone);
        let write = std::mem::replace(&mut self.write, WriteSide::Gone);
        let (write_done, read_done) = (self.write_done, self.read_done);
        let inbound = std::mem::replace(&mut self.inbound, Inbound::new(0));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let _ = tokio::time::timeout(CLOSE_WAIT, end_stream(read, write, inbound, read_done, write_done)).await;
        });
    }
}

/// The end of a dropped stream, as [`crate::relay()`] ends one: our
/// direction's end, the rest of the peer's direction read and dropped, then
/// the Close handshake. Gives up at the first error or early Close.
async fn end_stream<S>(
    read: ReadSide<S>,
    write: WriteSide<S>,
    mut inbound: Inbound,
    mut read_done: bool,
    write_done: bool,
) -> Option<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut writer = match write {
        WriteSide::Idle(writer, _) => writer,
        WriteSide::Busy(writing) => {
            let (writer, _, written) = writing.await;
            written.ok()?;
            writer
        }
        WriteSide::Gone => return None,
    };
    if !write_done {
        data::send(&mut writer, data::binary(&mut [])).await.ok()?;
    }
    // Whether a frame ends the peer's direction; `None` for an early Close
    // or a framing error.
    let mut ends = |opcode, fin, len| match inbound.classify(opcode, fin, len).ok()? {
        Event::End => Some(true),
        Event::Close => None,
        Event::Bytes | Event::Skip => Some(false),
    };
    let mut reader = match read {
        ReadSide::Idle(reader) => reader,
        ReadSide::Busy(reading) => {
            let (reader, read) = reading.await;
            let (opcode, fin, payload) = read.ok()?;
            read_done |= ends(opcode, fin, payload.len())?;
            reader
        }
        ReadSide::Gone => return None,
    };
    while !read_done {
        let frame = reader.read_frame(&mut data::drop_obligation).await.ok()?;
        read_done = ends(frame.opcode, frame.fin, frame.payload.len())?;
    }
    data::close_handshake(&mut reader, &mut writer).await;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    /// Our byte stream (fastwebsockets, client side) against a tungstenite
    /// peer: the other implementation checks our frames.
    async fn pair() -> (ByteStream<tokio::io::DuplexStream>, WebSocketStream<tokio::io::DuplexStream>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let ours = DataSocket::new(a, data::Role::Client, 1 << 20);
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
