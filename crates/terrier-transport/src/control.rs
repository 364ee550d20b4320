//! Control frames: terrier-proto messages as WebSocket text frames.

use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

/// Encodes a control message as a text frame.
pub fn encode<M: Serialize>(msg: &M) -> Message {
    // Serialising our own message types to JSON cannot fail: no maps with
    // non-string keys, no floats.
    let json = serde_json::to_string(msg).expect("control messages always serialise");
    Message::text(json)
}
