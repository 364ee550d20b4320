//! One WebSocket client connection (public only for its error types) over an `embedded-io-async` stream: the
//! opening handshake, then frames in and out. The RFC 6455 state machine
//! (masking, frame headers, close handshake, accept-key check) is the
//! `embedded-websocket` crate's sans-io `WebSocketClient`; this module owns
//! the stream and the buffers around it.
//!
//! Reads are cancel-safe: the only await in a read is the stream's own
//! `read`, and everything decoded so far is kept in `self`, so a caller may
//! race a read against a timer or a channel and drop it. Writes are not:
//! callers write only outside a `select`.

use embedded_io::Error as _;
use embedded_io_async::{Read, Write};
use embedded_websocket::{
    Error as WsCoreError, WebSocketClient, WebSocketCloseStatusCode, WebSocketKey, WebSocketReceiveMessageType as Recv,
    WebSocketSendMessageType as Send, WebSocketState,
};
use heapless::String;
use rand_core::RngCore;

use crate::connect::Endpoint;
use crate::handshake::{self, Head, Target};

/// Longest refusal reason kept from a handshake response body.
pub const MAX_REASON_LEN: usize = 96;

/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// A failure on an open socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// The stream failed.
    Io(embedded_io::ErrorKind),
    /// The peer closed the TCP connection.
    Eof,
    /// The peer broke RFC 6455 or the terrier protocol.
    Protocol,
    /// An outgoing frame does not fit the `tx` buffer.
    FrameTooLarge,
}

/// Why a handshake did not produce a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The stream failed or closed during the handshake.
    Socket(WsError),
    /// The request does not fit the `rx` buffer (long token, many services).
    RequestTooLarge,
    /// Not an HTTP response, a head larger than `rx`, or a wrong accept key.
    BadResponse,
    /// `307`: repeat the handshake at this node.
    Redirect(Endpoint),
    /// Any other status, with the first line of its body.
    Rejected {
        /// HTTP status code (`400`, `401`, `404`, `409`, `429`, `503`...).
        status: u16,
        /// The server's one-line reason.
        reason: String<MAX_REASON_LEN>,
    },
}

impl From<WsError> for HandshakeError {
    fn from(e: WsError) -> Self {
        Self::Socket(e)
    }
}

/// One piece of what arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// `len` payload bytes of a text message; `end` when the message is complete.
    Text { len: usize, end: bool },
    /// `len` payload bytes of a binary message; `end` when the frame is complete.
    /// An empty, complete binary frame is a half-close.
    Binary { len: usize, end: bool },
    /// A ping; answer with [`WsConn::pong`].
    Ping,
    /// A pong.
    Pong,
    /// The peer started the close handshake (with its status code, if any).
    Close(Option<u16>),
    /// The peer answered our Close: the socket is finished.
    Closed,
}

/// A whole message on the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message {
    /// A text message of this many bytes at the start of the message buffer.
    Text(usize),
    /// A text message larger than the message buffer (skipped).
    TooLarge,
    /// A binary frame part (never expected on the control socket).
    Binary,
    /// A ping; answer with [`WsConn::pong`].
    Ping,
    /// A pong.
    Pong,
    /// The peer started the close handshake.
    Close(Option<u16>),
    /// The close handshake finished.
    Closed,
}

/// An open WebSocket client connection.
pub(crate) struct WsConn<'b, T, R: RngCore> {
    /// The byte stream to the server.
    io: T,
    /// RFC 6455 state: masking, continuation, close handshake.
    ws: WebSocketClient<R>,
    /// Bytes read from the stream; `rx[start..end]` are not decoded yet.
    rx: &'b mut [u8],
    start: usize,
    end: usize,
    /// Room for one encoded outgoing frame.
    tx: &'b mut [u8],
    /// Inside a data frame whose payload has not all been decoded yet.
    in_frame: bool,
    /// Bytes of the text message being assembled by `read_message`.
    partial: usize,
    /// The message being assembled did not fit; drop its remaining parts.
    skipping: bool,
    /// Payload of the last ping, echoed by `pong`.
    ping: [u8; MAX_CONTROL_PAYLOAD],
    ping_len: usize,
}

impl<'b, T: Read + Write, R: RngCore> WsConn<'b, T, R> {
    /// Sends the upgrade request for `target` and reads the answer. Bytes
    /// after a `101` head stay in `rx` and are decoded as frames.
    pub(crate) async fn handshake(
        mut io: T,
        mut rng: R,
        rx: &'b mut [u8],
        tx: &'b mut [u8],
        target: &Target<'_>,
        server: &Endpoint,
        token: Option<&str>,
    ) -> Result<Self, HandshakeError> {
        let upgraded = upgrade(&mut io, &mut rng, rx, target, server, token).await?;
        Self::accept(io, rng, rx, tx, upgraded)
    }

    /// Checks the `101` head that [`upgrade`] read (the accept key) and
    /// starts framing. Split from the request so a caller can follow
    /// redirects in a loop with short borrows of its buffers.
    pub(crate) fn accept(
        io: T,
        rng: R,
        rx: &'b mut [u8],
        tx: &'b mut [u8],
        up: Upgraded,
    ) -> Result<Self, HandshakeError> {
        let mut ws = WebSocketClient::new_client(rng);
        ws.client_accept(&WebSocketKey::from(up.key.as_str()), &rx[..up.head_len])
            .map_err(|_| HandshakeError::BadResponse)?;
        Ok(Self {
            io,
            ws,
            rx,
            start: up.head_len,
            end: up.end,
            tx,
            in_frame: false,
            partial: 0,
            skipping: false,
            ping: [0; MAX_CONTROL_PAYLOAD],
            ping_len: 0,
        })
    }

    /// Largest payload one outgoing frame can carry with this `tx` buffer.
    pub(crate) fn max_payload(&self) -> usize {
        self.tx.len().saturating_sub(crate::buffers::FRAME_OVERHEAD)
    }

    /// Reads the next piece of a message into `out` (not empty); control
    /// frames are kept inside `self`. Cancel-safe.
    pub(crate) async fn read_part(&mut self, out: &mut [u8]) -> Result<Part, WsError> {
        loop {
            if let Some(part) = self.decode(out)? {
                return Ok(part);
            }
            self.fill().await?;
        }
    }

    /// Decodes one piece from the bytes already read, if there is one.
    fn decode(&mut self, out: &mut [u8]) -> Result<Option<Part>, WsError> {
        let pending = &self.rx[self.start..self.end];
        if pending.len() < 2 {
            return Ok(None);
        }
        // A control frame (ping, pong, close) is decoded only when it is all
        // here, and into `ping`, so its payload (echoed by a pong, or a close
        // code) is whole and `out` only ever receives message bytes.
        let control = !self.in_frame && pending[0] & 0x08 != 0;
        if control {
            let len = usize::from(pending[1] & 0x7f);
            let masked = if pending[1] & 0x80 != 0 { 4 } else { 0 };
            if len > MAX_CONTROL_PAYLOAD {
                return Err(WsError::Protocol);
            }
            if pending.len() < 2 + masked + len {
                return Ok(None);
            }
        }
        let to: &mut [u8] = if control { &mut self.ping[..] } else { &mut *out };
        let r = match self.ws.read(pending, to) {
            Ok(r) => r,
            Err(WsCoreError::ReadFrameIncomplete) => return Ok(None),
            Err(_) => return Err(WsError::Protocol),
        };
        self.start += r.len_from;
        let part = match r.message_type {
            Recv::Text | Recv::Binary => {
                self.in_frame = !r.end_of_message;
                if r.len_to == 0 && !r.end_of_message {
                    // Only the header so far: wait for payload bytes.
                    return Ok(None);
                }
                match r.message_type {
                    Recv::Text => Part::Text { len: r.len_to, end: r.end_of_message },
                    _ => Part::Binary { len: r.len_to, end: r.end_of_message },
                }
            }
            Recv::Ping => {
                self.ping_len = r.len_to.min(MAX_CONTROL_PAYLOAD);
                if !control {
                    // A ping between two fragments of a message: it was
                    // decoded into `out`.
                    self.ping[..self.ping_len].copy_from_slice(&out[..self.ping_len]);
                }
                Part::Ping
            }
            Recv::Pong => Part::Pong,
            Recv::CloseMustReply => Part::Close(close_code(r.close_status)),
            Recv::CloseCompleted => Part::Closed,
        };
        Ok(Some(part))
    }

    /// Reads more bytes from the stream into `rx`. Cancel-safe.
    async fn fill(&mut self) -> Result<(), WsError> {
        if self.start > 0 {
            self.rx.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.rx.len() {
            // Cannot happen with rx >= MIN_BUFFER: frames decode piece by piece.
            return Err(WsError::Protocol);
        }
        let n = read_some(&mut self.io, &mut self.rx[self.end..]).await?;
        self.end += n;
        Ok(())
    }

    /// Reads the next whole message (text assembled into `msg`), or a control
    /// frame. Cancel-safe: a partly assembled text message is kept.
    pub(crate) async fn read_message(&mut self, msg: &mut [u8]) -> Result<Message, WsError> {
        loop {
            if self.partial == msg.len() && !self.skipping {
                // The buffer is full and the message goes on: it is too large;
                // drop the rest of it and read on.
                self.skipping = true;
                self.partial = 0;
            }
            let part = self.read_part(&mut msg[self.partial..]).await?;
            match part {
                Part::Text { len, end } => {
                    if !self.skipping {
                        self.partial += len;
                    }
                    if end {
                        let n = core::mem::take(&mut self.partial);
                        if core::mem::take(&mut self.skipping) {
                            return Ok(Message::TooLarge);
                        }
                        return Ok(Message::Text(n));
                    }
                }
                Part::Binary { .. } => return Ok(Message::Binary),
                Part::Ping => return Ok(Message::Ping),
                Part::Pong => return Ok(Message::Pong),
                Part::Close(code) => return Ok(Message::Close(code)),
                Part::Closed => return Ok(Message::Closed),
            }
        }
    }

    /// Sends one whole frame.
    async fn send(&mut self, kind: Send, payload: &[u8]) -> Result<(), WsError> {
        let n = self.ws.write(kind, true, payload, self.tx).map_err(|e| match e {
            WsCoreError::WriteToBufferTooSmall => WsError::FrameTooLarge,
            _ => WsError::Protocol,
        })?;
        self.io.write_all(&self.tx[..n]).await.map_err(|e| WsError::Io(e.kind()))?;
        self.io.flush().await.map_err(|e| WsError::Io(e.kind()))
    }

    /// Sends a text frame (a control message).
    pub(crate) async fn send_text(&mut self, text: &[u8]) -> Result<(), WsError> {
        self.send(Send::Text, text).await
    }

    /// Sends a binary frame; an empty one ends this direction (half-close).
    /// `bytes` must be at most [`Self::max_payload`] long.
    pub(crate) async fn send_binary(&mut self, bytes: &[u8]) -> Result<(), WsError> {
        self.send(Send::Binary, bytes).await
    }

    /// Sends a ping (the agent's own heartbeat).
    pub(crate) async fn ping(&mut self) -> Result<(), WsError> {
        self.send(Send::Ping, &[]).await
    }

    /// Answers the last ping with its payload.
    pub(crate) async fn pong(&mut self) -> Result<(), WsError> {
        let n = self.ws.write(Send::Pong, true, &self.ping[..self.ping_len], self.tx).map_err(|_| WsError::Protocol)?;
        self.io.write_all(&self.tx[..n]).await.map_err(|e| WsError::Io(e.kind()))?;
        self.io.flush().await.map_err(|e| WsError::Io(e.kind()))
    }

    /// Starts the close handshake (normal closure), or answers the peer's
    /// Close with the same code. Errors are ignored: the socket is ending.
    pub(crate) async fn close(&mut self, code: Option<u16>) {
        let n = match self.ws.state {
            WebSocketState::Open => self.ws.close(WebSocketCloseStatusCode::NormalClosure, None, self.tx),
            WebSocketState::CloseReceived => {
                let payload = code.map(u16::to_be_bytes);
                self.ws.write(Send::CloseReply, true, payload.as_ref().map_or(&[][..], |p| &p[..]), self.tx)
            }
            _ => return,
        };
        if let Ok(n) = n {
            let _ = self.io.write_all(&self.tx[..n]).await;
            let _ = self.io.flush().await;
        }
    }
}

/// A `101` head read into `rx[..head_len]`; `rx[head_len..end]` are frame bytes.
pub(crate) struct Upgraded {
    key: String<{ handshake::KEY_LEN }>,
    head_len: usize,
    end: usize,
}

/// Sends the upgrade request for `target` (written into `rx`) and reads the
/// response head into `rx`: `101` gives [`Upgraded`], anything else an error
/// (a `307` carries the node to try next).
pub(crate) async fn upgrade<T: Read + Write>(
    io: &mut T,
    rng: &mut impl RngCore,
    rx: &mut [u8],
    target: &Target<'_>,
    server: &Endpoint,
    token: Option<&str>,
) -> Result<Upgraded, HandshakeError> {
    let key = handshake::new_key(rng);
    let n = handshake::write_request(rx, target, server, token, &key).ok_or(HandshakeError::RequestTooLarge)?;
    io.write_all(&rx[..n]).await.map_err(io_error)?;
    io.flush().await.map_err(io_error)?;

    let mut end = 0;
    let (head_len, status) = loop {
        match handshake::parse_head(&rx[..end]) {
            Ok(Some((len, Head::Upgrade))) => return Ok(Upgraded { key, head_len: len, end }),
            Ok(Some((_, Head::Redirect(location)))) => {
                return Err(HandshakeError::Redirect(Endpoint::parse_url(location).ok_or(HandshakeError::BadResponse)?))
            }
            Ok(Some((len, Head::Rejected { status, content_length }))) => break (len, (status, content_length)),
            Ok(None) if end < rx.len() => end += read_some(io, &mut rx[end..]).await?,
            _ => return Err(HandshakeError::BadResponse),
        }
    };
    // The reason is informational: read what fits, stop at EOF.
    let (status, content_length) = status;
    let want = head_len.saturating_add(content_length).min(rx.len());
    while end < want {
        match read_some(io, &mut rx[end..want]).await {
            Ok(n) => end += n,
            Err(_) => break,
        }
    }
    let reason = handshake::reason_line(&rx[head_len..end.min(want)]);
    Err(HandshakeError::Rejected { status, reason })
}

fn close_code(status: Option<WebSocketCloseStatusCode>) -> Option<u16> {
    // `embedded-websocket` reports a Close without a code as 1011; the
    // numeric value is what the protocol's close codes are compared with.
    status.map(|s| match s {
        WebSocketCloseStatusCode::Custom(c) => c,
        WebSocketCloseStatusCode::NormalClosure => 1000,
        WebSocketCloseStatusCode::EndpointUnavailable => 1001,
        WebSocketCloseStatusCode::ProtocolError => 1002,
        WebSocketCloseStatusCode::MessageTooBig => 1009,
        WebSocketCloseStatusCode::InternalServerError => 1011,
        _ => 1005,
    })
}

/// Reads at least one byte; zero is end of stream.
async fn read_some<T: Read>(io: &mut T, buf: &mut [u8]) -> Result<usize, WsError> {
    match io.read(buf).await {
        Ok(0) => Err(WsError::Eof),
        Ok(n) => Ok(n),
        Err(e) => Err(WsError::Io(e.kind())),
    }
}

fn io_error<E: embedded_io::Error>(e: E) -> HandshakeError {
    HandshakeError::Socket(WsError::Io(e.kind()))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A server that sends `script` one byte per read and records writes.
    struct Trickle {
        script: Vec<u8>,
        at: usize,
        written: Vec<u8>,
    }

    impl embedded_io_async::ErrorType for Trickle {
        type Error = core::convert::Infallible;
    }
    impl Read for Trickle {
        async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let n = usize::from(self.at < self.script.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.script[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }
    impl Write for Trickle {
        async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        async fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    /// An unmasked server frame.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = std::vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    fn open<'b>(script: Vec<u8>, rx: &'b mut [u8], tx: &'b mut [u8]) -> WsConn<'b, Trickle, rand_core::OsRng> {
        let mut ws = WebSocketClient::new_client(rand_core::OsRng);
        ws.state = WebSocketState::Open;
        WsConn {
            io: Trickle { script, at: 0, written: Vec::new() },
            ws,
            rx,
            start: 0,
            end: 0,
            tx,
            in_frame: false,
            partial: 0,
            skipping: false,
            ping: [0; MAX_CONTROL_PAYLOAD],
            ping_len: 0,
        }
    }

    #[test]
    fn messages_fed_byte_by_byte_fill_the_buffer_exactly_and_pings_keep_their_payload() {
        let exact: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut script = frame(0x9, b"hb");
        script.extend(frame(0x1, &exact));
        script.extend(frame(0x1, &[b'x'; 301]));
        script.extend(frame(0xA, b""));
        script.extend(frame(0x1, b"ok"));
        script.extend(frame(0x8, &4001u16.to_be_bytes()));
        let (mut rx, mut tx, mut msg) = ([0u8; 256], [0u8; 256], [0u8; 300]);
        let mut ws = open(script, &mut rx, &mut tx);
        embassy_futures::block_on(async {
            assert_eq!(ws.read_message(&mut msg).await, Ok(Message::Ping));
            ws.pong().await.unwrap();
            assert_eq!(ws.read_message(&mut msg).await, Ok(Message::Text(300)));
            assert_eq!(&msg[..], &exact[..]);
            assert_eq!(ws.read_message(&mut msg).await, Ok(Message::TooLarge));
            assert_eq!(ws.read_message(&mut msg).await, Ok(Message::Pong));
            assert_eq!(ws.read_message(&mut msg).await, Ok(Message::Text(2)));
            assert_eq!(&msg[..2], b"ok");
            assert_eq!(ws.read_message(&mut msg).await, Ok(Message::Close(Some(4001))));
            assert_eq!(ws.read_message(&mut msg).await, Err(WsError::Eof));
        });
        // The pong: FIN + opcode 10, masked, 2 bytes, payload "hb" under the mask.
        let w = &ws.io.written;
        assert_eq!((w[0], w[1]), (0x8A, 0x82));
        let mask = &w[2..6];
        assert_eq!([w[6] ^ mask[0], w[7] ^ mask[1]], *b"hb");
    }

    #[test]
    fn a_large_binary_frame_arrives_in_pieces_and_an_empty_one_is_a_half_close() {
        let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        // A 64-bit length header, then an empty frame.
        let mut long = std::vec![0x82, 127];
        long.extend_from_slice(&(40_000u64).to_be_bytes());
        long.extend_from_slice(&big);
        long.extend(frame(0x2, b""));
        let (mut rx, mut tx, mut down) = ([0u8; 256], [0u8; 256], [0u8; 256]);
        let mut ws = open(long, &mut rx, &mut tx);
        let mut got = Vec::new();
        embassy_futures::block_on(async {
            loop {
                match ws.read_part(&mut down).await.unwrap() {
                    Part::Binary { len: 0, end: true } => break,
                    Part::Binary { len, .. } => got.extend_from_slice(&down[..len]),
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        assert_eq!(got, big);
    }
}
