//! Data sockets: the WebSocket that carries one visitor stream, and the
//! framing rules of docs/PROTOCOL.md §4 that
//! [`crate::relay`](mod@crate::relay) and [`crate::byte_stream`] share.
//!
//! Data sockets run on `fastwebsockets`, control sockets on tungstenite.
//! Why: tungstenite copies every payload behind the header into its write
//! buffer and copies every frame it reads out of a zeroed read buffer. A
//! WebSocket header of 2-14 bytes puts those copies at an address that is
//! not 16-byte aligned with the source, where glibc's `memcpy` is ~20x
//! slower on some CPUs (glibc BZ 30994, `rep movsb` on AMD Zen): 36 % of the
//! agent's CPU went there in a bulk transfer. `fastwebsockets` writes the
//! header and the payload with one `writev`, masks a client's payload in
//! place, and reads a frame straight into its own buffer where it is
//! unmasked in place: no payload is copied in user space.

use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketRead, WebSocketWrite};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};

use crate::capped::{CappedReads, MAX_READ_BYTES};

pub use fastwebsockets::Role;

/// How long closing a data socket waits for the peer's Close frame before
/// it drops the socket anyway.
pub(crate) const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The reading half of a data socket.
pub(crate) type Reader<S> = WebSocketRead<ReadHalf<CappedReads<S>>>;
/// The writing half of a data socket.
pub(crate) type Writer<S> = WebSocketWrite<WriteHalf<CappedReads<S>>>;

/// One data socket after its handshake (either side).
///
/// It is kept split in its two halves from the start: a relay needs both at
/// once, and a socket that carries one stream after another (pooled with
/// `reuse=1`, docs/PROTOCOL.md §4.3) must come out of a relay whole, with
/// whatever the reading half already buffered of the next frame.
pub struct DataSocket<S> {
    /// The reading half, read a few frames at a time (see [`crate::capped`]).
    pub(crate) rd: Reader<S>,
    /// The writing half.
    pub(crate) wr: Writer<S>,
    /// Largest message accepted (frames, and fragmented messages in total).
    pub(crate) max_message_bytes: usize,
}

impl<S> DataSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a connection whose WebSocket handshake is done (bytes the
    /// peer sent after it must still be readable from `io`). Frames over
    /// `max_message_bytes` end the socket with an error.
    pub fn new(io: S, role: Role, max_message_bytes: usize) -> Self {
        let mut ws = WebSocket::after_handshake(CappedReads::new(io, MAX_READ_BYTES), role);
        // fastwebsockets refuses a frame of `max_message_size` bytes or more.
        ws.set_max_message_size(max_message_bytes.saturating_add(1));
        // A Close is part of our framing (an abort, or the last step): we
        // answer it ourselves.
        ws.set_auto_close(false);
        // The reading half cannot write: a Ping is ignored (terrier never
        // pings data sockets).
        ws.set_auto_pong(false);
        ws.set_writev(true);
        let (rd, wr) = ws.split(tokio::io::split);
        Self { rd, wr, max_message_bytes }
    }

    /// Sends one text frame (`assign` on a pooled socket).
    pub async fn send_text(&mut self, text: &str) -> Result<(), WebSocketError> {
        send(&mut self.wr, Frame::text(Payload::Owned(text.as_bytes().to_vec()))).await
    }

    /// Waits for a text frame (`assign` on a pooled socket); `None` when the
    /// socket closes, breaks, or sends anything but bytes or pings first.
    /// Binary frames before it are skipped. A Close is answered with ours,
    /// so the peer's close handshake ends at once.
    pub async fn recv_text(&mut self) -> Option<String> {
        loop {
            let frame = self.rd.read_frame(&mut drop_obligation).await.ok()?;
            match frame.opcode {
                OpCode::Text if frame.fin => return String::from_utf8(frame.payload.to_vec()).ok(),
                OpCode::Binary | OpCode::Continuation | OpCode::Ping | OpCode::Pong => {}
                OpCode::Text => return None,
                OpCode::Close => {
                    let _ = send(&mut self.wr, close()).await;
                    return None;
                }
            }
        }
    }

    /// Ends the socket: our Close, then the peer's (within `CLOSE_WAIT`),
    /// so neither side sees a reset.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(CLOSE_WAIT, close_handshake(&mut self.rd, &mut self.wr)).await;
    }
}

/// What a frame read from a data socket means for the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The frame's payload is stream bytes (possibly none).
    Bytes,
    /// The peer ended its direction (an empty message).
    End,
    /// The peer sent Close.
    Close,
    /// Nothing for the stream (Ping, Pong).
    Skip,
}

/// A frame that breaks the data socket framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A text frame where only bytes belong.
    #[error("unexpected text frame on a data socket")]
    Text,
    /// A continuation without a message, or a message inside another.
    #[error("bad fragmentation on a data socket")]
    Fragments,
    /// A fragmented message over the frame limit in total.
    #[error("fragmented message over the data frame limit")]
    TooLarge,
}

/// Reads frames as messages without reassembling them: a fragment's bytes
/// go to the stream as they come; a message that is empty in total is the
/// end of the peer's direction.
#[derive(Debug)]
pub(crate) struct Inbound {
    /// Largest message accepted.
    max_message_bytes: usize,
    /// Bytes so far of the fragmented message being read, if any.
    fragmented: Option<usize>,
}

impl Inbound {
    /// Framing state for a socket accepting messages up to `max_message_bytes`.
    pub(crate) fn new(max_message_bytes: usize) -> Self {
        Self { max_message_bytes, fragmented: None }
    }

    /// Classifies one frame (its opcode, FIN bit and payload length).
    pub(crate) fn classify(&mut self, opcode: OpCode, fin: bool, len: usize) -> Result<Event, FramingError> {
        match opcode {
            OpCode::Binary if self.fragmented.is_some() => Err(FramingError::Fragments),
            OpCode::Binary if fin => Ok(if len == 0 { Event::End } else { Event::Bytes }),
            OpCode::Binary => {
                self.fragmented = Some(len);
                Ok(Event::Bytes)
            }
            OpCode::Continuation => {
                let total = self.fragmented.ok_or(FramingError::Fragments)?.saturating_add(len);
                if total > self.max_message_bytes {
                    return Err(FramingError::TooLarge);
                }
                self.fragmented = (!fin).then_some(total);
                Ok(if fin && total == 0 { Event::End } else { Event::Bytes })
            }
            OpCode::Text => Err(FramingError::Text),
            OpCode::Close => Ok(Event::Close),
            OpCode::Ping | OpCode::Pong => Ok(Event::Skip),
        }
    }
}

/// For the reading half: frames fastwebsockets asks us to send back (Pongs)
/// are dropped, as that half cannot write.
pub(crate) fn drop_obligation(_frame: Frame<'_>) -> std::future::Ready<Result<(), std::convert::Infallible>> {
    std::future::ready(Ok(()))
}

/// A binary frame of `payload` (empty: the end of our direction). A
/// client's payload is masked in place, so `payload` is garbage afterwards.
pub(crate) fn binary(payload: &mut [u8]) -> Frame<'_> {
    Frame::binary(Payload::BorrowedMut(payload))
}

/// Writes `frame` and flushes it.
pub(crate) async fn send<W: AsyncWrite + Unpin>(
    wr: &mut WebSocketWrite<W>,
    frame: Frame<'_>,
) -> Result<(), WebSocketError> {
    wr.write_frame(frame).await?;
    wr.flush().await
}

/// A Close frame without a status code.
pub(crate) fn close() -> Frame<'static> {
    Frame::close_raw(Payload::Owned(Vec::new()))
}

/// The last step of a stream that ended cleanly both ways: our Close, then
/// the peer's Close (anything before it is dropped). Callers bound it with
/// [`CLOSE_WAIT`]; it ends early when the socket breaks.
pub(crate) async fn close_handshake<R, W>(rd: &mut WebSocketRead<R>, wr: &mut WebSocketWrite<W>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let _ = send(wr, close()).await;
    while let Ok(frame) = rd.read_frame(&mut drop_obligation).await {
        if frame.opcode == OpCode::Close {
            break;
        }
    }
}

/// The payload of a read frame as owned bytes (fastwebsockets reads every
/// frame into its own `BytesMut`, so this is no copy).
pub(crate) fn into_bytes(payload: Payload<'_>) -> bytes::BytesMut {
    match payload {
        Payload::Bytes(bytes) => bytes,
        other => bytes::BytesMut::from(&other[..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_are_bytes_and_an_empty_message_is_the_end() {
        let mut inbound = Inbound::new(10);
        assert_eq!(inbound.classify(OpCode::Binary, true, 3), Ok(Event::Bytes));
        assert_eq!(inbound.classify(OpCode::Binary, false, 4), Ok(Event::Bytes));
        assert_eq!(inbound.classify(OpCode::Ping, true, 0), Ok(Event::Skip));
        assert_eq!(inbound.classify(OpCode::Binary, true, 1), Err(FramingError::Fragments));
        assert_eq!(inbound.classify(OpCode::Continuation, true, 6), Ok(Event::Bytes));
        assert_eq!(inbound.classify(OpCode::Continuation, true, 1), Err(FramingError::Fragments));

        let mut inbound = Inbound::new(10);
        assert_eq!(inbound.classify(OpCode::Binary, false, 0), Ok(Event::Bytes));
        assert_eq!(inbound.classify(OpCode::Continuation, true, 0), Ok(Event::End), "empty in total");

        let mut inbound = Inbound::new(10);
        assert_eq!(inbound.classify(OpCode::Binary, false, 6), Ok(Event::Bytes));
        assert_eq!(inbound.classify(OpCode::Continuation, false, 5), Err(FramingError::TooLarge));
        assert_eq!(Inbound::new(10).classify(OpCode::Text, true, 1), Err(FramingError::Text));
        assert_eq!(Inbound::new(10).classify(OpCode::Binary, true, 0), Ok(Event::End));
        assert_eq!(Inbound::new(10).classify(OpCode::Close, true, 0), Ok(Event::Close));
    }
}
