//! WebSocket settings for control sockets (tokio-tungstenite), in one place
//! so server and agent agree on frame limits and buffer sizes. Data sockets
//! run on fastwebsockets instead: see [`crate::data`].

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Read buffer of a control socket. tungstenite zeroes the free part of its
/// read buffer before every read, and keeps it for the socket's life: its
/// 128 KiB default cost 15-30 % of CPU in memset and ~130 KiB per idle
/// device (measured in bench/RESULTS.md). Control frames are small and rare.
pub const READ_BUFFER_BYTES: usize = 2 * 1024;

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
