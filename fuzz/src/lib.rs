//! Helpers shared by the fuzz targets.

use terrier_proto::messages::is_plain;
use terrier_proto::{AgentMessage, ServerMessage};

/// All of `bytes` as one message with serde-json-core, which (unlike
/// serde_json) leaves trailing bytes to the caller: only whitespace may follow.
pub fn core_decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    let (msg, used) = serde_json_core::from_slice::<T>(bytes).ok()?;
    bytes[used..].iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')).then_some(msg)
}

/// Are all strings of a server message plain (JSON writes them unescaped)?
pub fn plain_server(msg: &ServerMessage<'_>) -> bool {
    match msg {
        ServerMessage::Welcome(w) => {
            [w.session, w.name, w.subdomain, w.url, w.tcp_host].into_iter().all(is_plain)
                && w.tcp.iter().all(|t| is_plain(t.service))
        }
        ServerMessage::Open(o) | ServerMessage::Assign(o) => is_plain(o.stream) && is_plain(o.service),
        ServerMessage::GoAway(_) => true,
    }
}

/// Are all strings of an agent message plain?
pub fn plain_agent(msg: &AgentMessage<'_>) -> bool {
    match msg {
        AgentMessage::Refused(r) => is_plain(r.stream) && is_plain(r.reason),
    }
}
