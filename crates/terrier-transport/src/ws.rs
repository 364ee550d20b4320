//! WebSocket settings for control sockets (tokio-tungstenite), in one place
//! so server and agent agree on frame limits and buffer sizes. Data sockets
//! run on fastwebsockets instead: see [`crate::data`].

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Read buffer of a control socket. tungstenite zeroes the free part of its
/// read buffer before every read, and keeps it for the socket's life: its
/// 128 KiB default cost 15-30 % of CPU in memset and ~130 KiB per idle
/// device (measured in bench/RESULTS.md). Control frames are small and rare.
pub const READ_BUFFER_BYTES: usize = 2 * 1024;

/// Capacity of the [`Buffered`] reader under a control socket: one byte,
/// the least tokio allows: every read is larger, so it bypasses the buffer.
pub const IO_BUFFER_BYTES: usize = 1;

/// The connection under a control socket: read through a buffer of one
/// byte, that is straight through (kept as a type so the socket types of
/// server and agent stay put if the buffer ever grows again).
pub type Buffered<S> = tokio::io::BufReader<S>;

/// Wraps the connection of a control socket before the WebSocket takes it.
pub fn buffered<S: tokio::io::AsyncRead>(io: S) -> Buffered<S> {
    tokio::io::BufReader::with_capacity(IO_BUFFER_BYTES, io)
}

/// The WebSocket configuration for a control socket that accepts frames of
/// at most `max_frame_bytes` (messages are single frames in terrier).
pub fn config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_frame_size(Some(max_frame_bytes))
        .max_message_size(Some(max_frame_bytes))
        // Small write buffer: frames are flushed one by one, and back-pressure
        // must reach the reader of the other side instead of piling up here.
        .write_buffer_size(0)
        .max_write_buffer_size(max_frame_bytes + 64 * 1024)
}
