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

/// The next text frame on a control socket (the agent waits for `welcome`
/// this way); `None` when the socket closes or fails first. Pings and
/// other non-text frames are skipped.
pub async fn next_text<S>(socket: &mut S) -> Option<String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    use futures_util::StreamExt;
    while let Some(Ok(msg)) = socket.next().await {
        match msg {
            Message::Text(text) => return Some(text.as_str().to_owned()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
    None
}
