//! WebSocket settings for terrier sockets, in one place so server and agent
//! agree on frame limits and buffer sizes.

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The WebSocket configuration for a socket that accepts frames of at most
/// `max_frame_bytes` (messages are single frames in terrier).
pub fn config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(Some(max_frame_bytes))
        .max_message_size(Some(max_frame_bytes))
        // Small write buffer: frames are flushed one by one, and back-pressure
        // must reach the reader of the other side instead of piling up here.
        .write_buffer_size(0)
        .max_write_buffer_size(max_frame_bytes + 64 * 1024)
}
