//! Relays bytes between a data socket (a WebSocket) and a byte stream (a
//! visitor's TCP connection, a local service; tests use an in-memory pipe).
//!
//! Framing on a data socket: every binary frame carries bytes of the stream;
//! an **empty** binary frame means "no more bytes in this direction" (a TCP
//! half-close, `shutdown(SHUT_WR)`); a Close frame ends the socket. A Close or
//! a broken socket before both directions finished is an abort: the byte
//! stream is dropped so its peer sees the connection end abruptly rather than
//! a clean end of data it never fully received.
//!
//! [`relay`] carries one stream and closes the socket; [`relay_stream`]
//! leaves it open, for a pooled socket that carries another stream next
//! (docs/PROTOCOL.md §4.3).

use bytes::BytesMut;
use fastwebsockets::WebSocketError;
use terrier_proto::limits::DATA_CHUNK_BYTES;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::data::{self, DataSocket, Event, FramingError, Inbound};

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
    /// The data socket failed or broke the WebSocket protocol.
    #[error("data socket: {0}")]
    Socket(#[from] WebSocketError),
    /// The peer closed the data socket before ending its direction.
    #[error("data socket closed before the stream ended")]
    Aborted,
    /// The peer broke the data socket framing (a text frame, bad fragments).
    #[error(transparent)]
    Framing(#[from] FramingError),
}

/// Relays until both directions have ended, then closes the socket (and
/// gives the peer's Close a moment to arrive, so neither side sees a
/// reset); returns the byte counts.
///
/// Errors abort both directions at once: the first failure drops the other
/// direction's future, and the caller drops both ends.
pub async fn relay<S, T>(mut socket: DataSocket<S>, io: T) -> Result<RelayStats, RelayError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let stats = relay_stream(&mut socket, io).await?;
    socket.close().await;
    Ok(stats)
}

/// Relays one stream until both directions have ended, and leaves the
/// socket open: both sides have sent and received the end of the stream, so
/// the next frame on it belongs to whatever comes next (another `assign`,
/// or a Close).
///
/// After an error the socket is mid-stream and must be dropped.
pub async fn relay_stream<S, T>(socket: &mut DataSocket<S>, io: T) -> Result<RelayStats, RelayError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut inbound = Inbound::new(socket.max_message_bytes);
    let DataSocket { rd, wr, .. } = socket;
    let (mut reader, mut writer) = tokio::io::split(io);

    let upstream = async {
        let mut sent = 0u64;
        // Our own buffer: each read lands here and is written out behind
        // its header with one writev (masked in place on the agent), never
        // copied. Never zeroed either: `read_buf` fills spare capacity, and
        // a zeroed 32 KiB was ~33k instructions of memset per stream
        // (callgrind), a third of the agent's cost of a new connection.
        let mut buf = BytesMut::with_capacity(DATA_CHUNK_BYTES);
        loop {
            buf.clear();
            let n = reader.read_buf(&mut buf).await?;
            data::send(wr, data::binary(&mut buf[..n])).await?;
            if n == 0 {
                return Ok::<_, RelayError>(sent);
            }
            sent += n as u64;
        }
    };
    let downstream = async {
        let mut received = 0u64;
        loop {
            let frame = match rd.read_frame(&mut data::drop_obligation).await {
                Ok(frame) => frame,
                Err(WebSocketError::UnexpectedEOF) => return Err(RelayError::Aborted),
                Err(e) => return Err(e.into()),
            };
            match inbound.classify(frame.opcode, frame.fin, frame.payload.len())? {
                Event::Bytes => {
                    received += frame.payload.len() as u64;
                    writer.write_all(&frame.payload).await?;
                }
                Event::End => {
                    writer.shutdown().await?;
                    return Ok::<_, RelayError>(received);
                }
                Event::Close => return Err(RelayError::Aborted),
                Event::Skip => {}
            }
        }
    };
    let (to_socket, from_socket) = tokio::try_join!(upstream, downstream)?;
    Ok(RelayStats { to_socket, from_socket })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    /// A relay (server side, fastwebsockets) between a tungstenite peer and
    /// an in-memory byte stream; frames over `max` bytes are refused.
    async fn start(
        max: usize,
    ) -> (
        tokio::task::JoinHandle<Result<RelayStats, RelayError>>,
        WebSocketStream<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let (io, local) = tokio::io::duplex(256 * 1024);
        let socket = DataSocket::new(a, data::Role::Server, max);
        let relay = tokio::spawn(relay(socket, io));
        let peer = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (relay, peer, local)
    }

    fn fragment(bytes: &[u8], opcode: OpCode, fin: bool) -> Message {
        Message::Frame(Frame::message(bytes.to_vec(), opcode, fin))
    }

    #[tokio::test]
    async fn bytes_and_fragments_flow_then_half_closes_end_the_relay_with_a_close() {
        let (relay, mut peer, mut local) = start(1024).await;
        peer.send(Message::binary(b"one ".to_vec())).await.unwrap();
        peer.send(fragment(b"two ", OpCode::Data(Data::Binary), false)).await.unwrap();
        peer.send(fragment(b"three", OpCode::Data(Data::Continue), true)).await.unwrap();
        // An empty message in fragments is the end of the peer's direction.
        peer.send(fragment(b"", OpCode::Data(Data::Binary), false)).await.unwrap();
        peer.send(fragment(b"", OpCode::Data(Data::Continue), true)).await.unwrap();
        let mut got = Vec::new();
        local.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"one two three");

        local.write_all(&[7u8; 100_000]).await.unwrap();
        local.shutdown().await.unwrap();
        let mut received = Vec::new();
        loop {
            match peer.next().await.unwrap().unwrap() {
                Message::Binary(bytes) if bytes.is_empty() => break,
                Message::Binary(bytes) => {
                    assert!(bytes.len() <= DATA_CHUNK_BYTES);
                    received.extend_from_slice(&bytes);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(received, vec![7u8; 100_000]);
        assert!(peer.next().await.unwrap().unwrap().is_close(), "a Close once both directions ended");
        drop(peer);
        let stats = relay.await.unwrap().unwrap();
        assert_eq!(stats, RelayStats { to_socket: 100_000, from_socket: 13 });
    }

    #[tokio::test]
    async fn relay_stream_leaves_the_socket_open_for_the_next_stream() {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let mut socket = DataSocket::new(a, data::Role::Server, 1024);
        let mut peer = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        for round in 0..2u8 {
            let (io, mut local) = tokio::io::duplex(1024);
            // The peer's bytes, its end, and right behind them the next
            // frame, all sent before the relay reads any of them: what the
            // relay buffered of the next frame must survive it.
            peer.send(Message::binary(vec![round])).await.unwrap();
            peer.send(Message::binary(Vec::new())).await.unwrap();
            peer.send(Message::text(format!("next {round}"))).await.unwrap();
            let service = async {
                let mut got = Vec::new();
                local.read_to_end(&mut got).await.unwrap();
                local.write_all(&[round + 10]).await.unwrap();
                local.shutdown().await.unwrap();
                got
            };
            let (stats, got) = tokio::join!(relay_stream(&mut socket, io), service);
            assert_eq!(got, [round]);
            assert_eq!(stats.unwrap(), RelayStats { to_socket: 1, from_socket: 1 });
            assert_eq!(peer.next().await.unwrap().unwrap(), Message::binary(vec![round + 10]));
            assert_eq!(peer.next().await.unwrap().unwrap(), Message::binary(Vec::new()), "the end, no Close");
            assert_eq!(socket.recv_text().await, Some(format!("next {round}")));
        }
        let closing = tokio::spawn(socket.close());
        assert!(peer.next().await.unwrap().unwrap().is_close(), "a Close only when the socket is closed");
        // Reading on sends tungstenite's queued answer to the Close.
        assert!(peer.next().await.is_none_or(|end| end.is_err()));
        tokio::time::timeout(Duration::from_secs(1), closing).await.expect("the Close handshake ends").unwrap();
    }

    #[tokio::test]
    async fn a_message_over_the_limit_or_a_close_before_the_end_fails_the_relay() {
        let (relay, mut peer, _local) = start(1024).await;
        peer.send(Message::binary(vec![1u8; 1024])).await.unwrap();
        peer.send(Message::binary(vec![1u8; 1025])).await.unwrap();
        assert!(matches!(relay.await.unwrap(), Err(RelayError::Socket(WebSocketError::FrameTooLarge))));

        let (relay, mut peer, _local) = start(1024).await;
        peer.send(fragment(&[1u8; 1000], OpCode::Data(Data::Binary), false)).await.unwrap();
        peer.send(fragment(&[1u8; 25], OpCode::Data(Data::Continue), true)).await.unwrap();
        assert!(matches!(relay.await.unwrap(), Err(RelayError::Framing(FramingError::TooLarge))));

        let (relay, mut peer, _local) = start(1024).await;
        peer.send(Message::text("not bytes")).await.unwrap();
        assert!(matches!(relay.await.unwrap(), Err(RelayError::Framing(FramingError::Text))));

        let (relay, mut peer, _local) = start(1024).await;
        peer.send(Message::Binary(Bytes::from_static(b"part"))).await.unwrap();
        peer.send(Message::Close(None)).await.unwrap();
        assert!(matches!(relay.await.unwrap(), Err(RelayError::Aborted)));
    }
}
