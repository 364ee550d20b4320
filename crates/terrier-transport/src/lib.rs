//! The std half of the terrier protocol, shared by `terrierd` and the agent:
//! WebSocket settings ([`ws`]), encoding control messages into frames
//! ([`control`]), random ids ([`ids`]) and the byte relay between a data
//! socket and a plain byte stream ([`relay`]), and a data socket seen as a
//! byte stream ([`byte_stream`]).
//!
//! The wire definitions themselves live in `terrier-proto` (no_std); this
//! crate only binds them to tokio and tokio-tungstenite, so swapping the
//! WebSocket implementation touches one crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod byte_stream;
pub mod control;
pub mod ids;
pub mod relay;
pub mod tcp;
pub mod ws;

pub use relay::{relay, RelayError, RelayStats};
