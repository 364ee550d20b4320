//! WebSocket settings for terrier sockets, in one place so server and agent
//! agree on frame limits and buffer sizes.

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Which kind of terrier socket a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A control socket: small, rare JSON frames; one per online device.
    Control,
    /// A data socket: a stream of binary frames.
    Data,
}

impl Kind {
    /// Read buffer of one socket. tungstenite zeroes the free part of its
    /// read buffer before every read, and keeps it for the socket's life:
    /// its 128 KiB default cost 15-30 % of CPU in memset and ~130 KiB per
    /// idle device (measured in bench/RESULTS.md).
    ///
    /// Data sockets therefore keep it small and read the connection through
    /// a [`Buffered`] reader of [`Kind::io_buffer_bytes`] instead: one large
    /// `recv` per wakeup, and per frame a memset and a copy of at most this
    /// many bytes, instead of a 32 KiB memset on every poll (callgrind
    /// counted ~50k instructions of memset per proxied HTTP request).
    pub fn read_buffer_bytes(self) -> usize {
        match self {
            Kind::Control => 2 * 1024,
            Kind::Data => 4 * 1024,
        }
    }

    /// Capacity of the [`Buffered`] reader under a socket: 32 KiB for data
    /// sockets; for control sockets (one per idle device, small frames) one
    /// byte, the least tokio allows: every read is larger, so it bypasses
    /// the buffer.
    pub fn io_buffer_bytes(self) -> usize {
        match self {
            Kind::Control => 1,
            Kind::Data => 32 * 1024,
        }
    }
}

/// The connection under a terrier WebSocket: read through a buffer (of zero
/// byte for control sockets, where reads go straight through).
pub type Buffered<S> = tokio::io::BufReader<S>;

/// Wraps the connection of a `kind` socket before the WebSocket takes it.
pub fn buffered<S: tokio::io::AsyncRead>(kind: Kind, io: S) -> Buffered<S> {
    tokio::io::BufReader::with_capacity(kind.io_buffer_bytes(), io)
}

/// The WebSocket configuration for a socket of `kind` that accepts frames of
/// at most `max_frame_bytes` (messages are single frames in terrier).
pub fn config(kind: Kind, max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(kind.read_buffer_bytes())
        .max_frame_size(Some(max_frame_bytes))
        .max_message_size(Some(max_frame_bytes))
        // Small write buffer: frames are flushed one by one, and back-pressure
        // must reach the reader of the other side instead of piling up here.
        .write_buffer_size(0)
        .max_write_buffer_size(max_frame_bytes + 64 * 1024)
}
