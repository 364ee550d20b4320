//! The terrier wire protocol, shared by the server (`terrierd`), the agent
//! (`terrier`) and the microcontroller agent.
//!
//! Everything two peers must agree on lives here and nowhere else: the control
//! messages ([`messages`]), the handshake paths, query parameters and status
//! codes ([`handshake`]), the rules for device names, subdomains and service ids
//! ([`name`]) and the protocol constants ([`limits`]). The crate is `no_std`
//! and allocation-free so that firmware can use the very same definitions;
//! messages borrow their strings from the frame they were decoded from, and
//! [`codec`] encodes them into buffers the caller owns. Every dependency is
//! taken without default features (no `std` anywhere below this crate);
//! `scripts/check-no-std.sh` builds it for a bare-metal target to prove it.
//! The optional `alloc` feature adds owned conveniences ([`codec::encode_vec`]).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod codec;
pub mod handshake;
pub mod limits;
pub mod messages;
pub mod name;

pub use messages::{AgentMessage, Open, Refused, ServerMessage, TcpPort, Welcome};
