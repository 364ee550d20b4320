//! The std half of the terrier protocol, shared by `terrierd` and the agent:
//! WebSocket settings ([`ws`]), encoding control messages into frames
//! ([`control`]), random ids ([`ids`]) and the byte relay between a data
//! socket and a plain byte stream ([`relay`](mod@relay)), a data socket seen as a
//! byte stream ([`byte_stream`]), data sockets themselves ([`data`]),
//! ending a relay that no longer moves bytes ([`idle`]), the client side
//! of a WebSocket handshake ([`client_upgrade`]), the reconnect backoff of
//! every device ([`reconnect`]), and "did you mean" for configuration keys
//! ([`suggest`]).
//!
//! The wire definitions themselves live in `terrier-proto` (no_std); this
//! crate only binds them to tokio, tokio-tungstenite (control sockets) and
//! fastwebsockets (data sockets, see [`data`] for why), so swapping a
//! WebSocket implementation touches one crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod byte_stream;
pub mod capped;
pub mod client_upgrade;
pub mod control;
pub mod data;
mod delegate;
pub mod idle;
pub mod ids;
pub mod prefixed;
pub mod reconnect;
pub mod relay;
pub mod suggest;
pub mod tcp;
pub mod ws;

pub use relay::{relay, relay_stream, RelayError, RelayStats};
