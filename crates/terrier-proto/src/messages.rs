//! Control messages: JSON text frames on the control socket (and the first
//! frame of a pooled data socket).
//!
//! Enums are externally tagged (`{"open":{"stream":"…","service":"http"}}`)
//! because internally tagged enums need `alloc` in serde, and firmware decodes
//! these with `serde-json-core`. Strings are borrowed from the frame; the
//! protocol never puts escapes in them (names, ids and URLs are plain ASCII).

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::limits::MAX_SERVICES;

/// Is `s` a string JSON writes without escapes (no `"`, backslash or control
/// characters)? Every string in a message must be: decoders borrow strings
/// from the frame, so serde_json rejects an escaped one and serde-json-core
/// hands it over still escaped.
pub fn is_plain(s: &str) -> bool {
    s.chars().all(|c| plain_char(c) == c)
}

/// `c`, or a stand-in when JSON would escape it: `'` for `"`, `/` for a backslash,
/// a space for control characters (C0, DEL and C1: a terminal acts on
/// some of them). Free text (a `refused` reason, a visitor's path) is
/// mapped through this before it is sent.
pub fn plain_char(c: char) -> char {
    match c {
        '"' => '\'',
        '\\' => '/',
        c if c.is_control() => ' ',
        c => c,
    }
}

/// Messages the server sends to an agent.
// `welcome` is large (its port list is inline), but without `alloc` there is
// no Box, and a decoded message only lives on the stack while it is handled.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// First frame of every accepted control socket: what the device got.
    #[serde(borrow)]
    Welcome(Welcome<'a>),
    /// Asks the agent to open a data socket for a new visitor stream.
    #[serde(borrow)]
    Open(Open<'a>),
    /// First frame on a pooled data socket: the visitor stream it now carries.
    #[serde(borrow)]
    Assign(Open<'a>),
    /// The server is going away: reconnect after `after_ms` (possibly elsewhere).
    GoAway(GoAway),
    /// A visitor's HTTP request the server forwarded to this device, sent
    /// only to an agent that asked (`requests=1`), for it to show.
    #[serde(borrow)]
    Request(RequestSeen<'a>),
}

/// One forwarded HTTP request, as the server logged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSeen<'a> {
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// Path without the query string (plain: see [`is_plain`]).
    pub path: &'a str,
    /// The answer's status (an error page's when the device gave none).
    pub status: u16,
    /// Milliseconds until the answer's head.
    pub duration_ms: u64,
    /// The answer's body size from `Content-Length`, when it had one.
    pub size: Option<u64>,
}

/// Messages an agent sends to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentMessage<'a> {
    /// The local service for a stream could not be reached.
    #[serde(borrow)]
    Refused(Refused<'a>),
}

/// What the server granted the device: its session, subdomain and ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome<'a> {
    /// Session id (32 hex digits); data sockets quote it.
    pub session: &'a str,
    /// The device name this session is for.
    pub name: &'a str,
    /// The device's subdomain label (also when it has no HTTP service, so
    /// the lease is visible).
    pub subdomain: &'a str,
    /// Public URL of the HTTP service, empty when the device has none.
    pub url: &'a str,
    /// Public host for the TCP ports.
    pub tcp_host: &'a str,
    /// Public port of each TCP service.
    #[serde(borrow)]
    pub tcp: Vec<TcpPort<'a>, MAX_SERVICES>,
    /// Seconds the lease outlives a disconnect.
    pub grace_secs: u32,
    /// Seconds between pings; silence for three intervals is death.
    pub heartbeat_secs: u32,
}

/// The server's answer (HTTP 200, a JSON body) to a control handshake with
/// `check=1`: what the device would be given now. No session is made, no
/// lease is touched, and an agent online with the name stays connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAnswer<'a> {
    /// The device name checked.
    pub name: &'a str,
    /// The subdomain its lease holds now; empty when it has no lease (a
    /// new one would be drawn).
    pub subdomain: &'a str,
    /// Public URL of that subdomain; empty with no lease.
    pub url: &'a str,
    /// Public host for the TCP ports.
    pub tcp_host: &'a str,
    /// Ports the lease holds now, by service.
    #[serde(borrow)]
    pub tcp: Vec<TcpPort<'a>, MAX_SERVICES>,
    /// Is an agent online with this name now (on any node)?
    pub online: bool,
    /// The address of that agent when it is online on the node answering;
    /// empty otherwise.
    pub online_from: &'a str,
    /// Is that agent another one than the checking agent (another
    /// `instance`, or another address)? Then running this agent would take
    /// the name from it.
    pub other_agent: bool,
}

/// One TCP service and the public port it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpPort<'a> {
    /// Service id as the agent announced it.
    pub service: &'a str,
    /// Public TCP port on the server.
    pub port: u16,
}

/// A stream to open (`open`) or just assigned to a pooled socket (`assign`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open<'a> {
    /// Stream id (32 hex digits), single use.
    pub stream: &'a str,
    /// Service id: `http` or one of the announced TCP service ids.
    pub service: &'a str,
}

/// The agent could not reach the local service of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused<'a> {
    /// Stream id from `open`.
    pub stream: &'a str,
    /// Human-readable reason, shown to the visitor on the 502 page.
    pub reason: &'a str,
}

/// The server asks the agent to reconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoAway {
    /// Milliseconds the agent should wait before reconnecting.
    pub after_ms: u32,
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;

    use super::*;

    fn welcome() -> ServerMessage<'static> {
        let mut tcp = Vec::new();
        tcp.push(TcpPort { service: "22", port: 20001 }).unwrap();
        ServerMessage::Welcome(Welcome {
            session: "0123456789abcdef0123456789abcdef",
            name: "thermo-42",
            subdomain: "k3j9x2abcd",
            url: "http://k3j9x2abcd.localhost:8080",
            tcp_host: "localhost",
            tcp,
            grace_secs: 600,
            heartbeat_secs: 20,
        })
    }

    #[test]
    fn open_has_the_documented_json_shape() {
        let msg = ServerMessage::Open(Open { stream: "ab", service: "http" });
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(json, r#"{"open":{"stream":"ab","service":"http"}}"#);
    }

    #[test]
    fn messages_round_trip_with_serde_json_core() {
        let msgs = [
            welcome(),
            ServerMessage::Open(Open { stream: "ab", service: "22" }),
            ServerMessage::Assign(Open { stream: "cd", service: "http" }),
            ServerMessage::GoAway(GoAway { after_ms: 1500 }),
        ];
        for msg in msgs {
            let mut buf = [0u8; 512];
            let n = serde_json_core::to_slice(&msg, &mut buf).unwrap();
            let (back, used): (ServerMessage, usize) = serde_json_core::from_slice(&buf[..n]).unwrap();
            assert_eq!(used, n);
            assert_eq!(back, msg);
            // The std encoder and the firmware encoder agree byte for byte.
            assert_eq!(serde_json::to_vec(&msg).unwrap(), &buf[..n]);
        }
    }

    #[test]
    fn refused_round_trips() {
        let msg = AgentMessage::Refused(Refused { stream: "ab", reason: "connection refused" });
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(json, r#"{"refused":{"stream":"ab","reason":"connection refused"}}"#);
        let back: AgentMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let json = serde_json::to_vec(&welcome()).unwrap();
        for cut in 0..json.len() {
            assert!(serde_json::from_slice::<ServerMessage>(&json[..cut]).is_err());
            assert!(serde_json_core::from_slice::<ServerMessage>(&json[..cut]).is_err());
        }
    }

    #[test]
    fn plain_strings_need_no_escapes() {
        for s in ["", "thermo-42", "127.0.0.1:80: Connection refused (os error 111)", "ünï 🐕"] {
            assert!(is_plain(s), "{s:?}");
            let json = serde_json::to_string(s).unwrap();
            assert!(!json[1..json.len() - 1].contains('\\'), "{json}");
        }
        for s in ["unknown service \"22\"", "C:\\dev", "line\nbreak", "\u{7}", "del\u{7f}", "csi\u{9b}2J"] {
            assert!(!is_plain(s), "{s:?}");
            let mapped: String = s.chars().map(plain_char).collect();
            assert!(is_plain(&mapped), "{mapped:?}");
        }
    }

    /// Found by fuzzing (`proto_encode`): a reason with a quote used to be
    /// sent escaped, which the server's borrowing decoder rejects, so the
    /// server closed the control socket as a protocol error.
    #[test]
    fn quoted_reason_decodes_once_made_plain() {
        let reason = "unknown service \"22\"";
        let raw = serde_json::to_string(&AgentMessage::Refused(Refused { stream: "ab", reason })).unwrap();
        assert!(serde_json::from_str::<AgentMessage>(&raw).is_err());
        let plain: String = reason.chars().map(plain_char).collect();
        let msg = AgentMessage::Refused(Refused { stream: "ab", reason: &plain });
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(serde_json::from_str::<AgentMessage>(&json).unwrap(), msg);
        let (back, _): (AgentMessage, usize) = serde_json_core::from_slice(json.as_bytes()).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn unknown_messages_are_rejected() {
        assert!(serde_json::from_str::<ServerMessage>(r#"{"launch":{}}"#).is_err());
        assert!(serde_json::from_str::<AgentMessage>(r#"{"open":{"stream":"a","service":"b"}}"#).is_err());
    }
}
