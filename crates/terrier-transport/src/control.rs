//! Control frames: terrier-proto messages as WebSocket text frames.

use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

/// Encodes a control message as a text frame.
pub fn encode<M: Serialize>(msg: &M) -> Message {
    Message::text(to_json(msg))
}

/// Encodes a control message as JSON text (`assign` goes on a data socket).
pub fn to_json<M: Serialize>(msg: &M) -> String {
    // Serialising our own message types to JSON cannot fail: no maps with
    // non-string keys, no floats.
    serde_json::to_string(msg).expect("control messages always serialise")
}
