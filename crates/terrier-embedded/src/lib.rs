//! The terrier agent core for microcontrollers: `no_std`, no allocation.
//!
//! Firmware embeds an [`Agent`] to give its device a public subdomain (and
//! public TCP ports) through a `terrierd` server, speaking the same protocol
//! as the std agent from the same [`terrier_proto`] definitions
//! (`docs/PROTOCOL.md`). The core owns no socket, no timer and no heap; the
//! firmware hands it:
//!
//! * a [`Connect`] — "open a TCP connection to host:port" (embassy-net,
//!   esp-wifi, smoltcp, or tokio on the host), returning `embedded-io-async`
//!   streams; TLS, when there is some, lives behind this trait too;
//! * a [`Service`] — the device's local services: answered in firmware (see
//!   [`http::HttpService`] for a small HTTP handler) or dialled on the LAN;
//! * a [`Clock`] — milliseconds and sleeping;
//! * an RNG (`rand_core` 0.6) per socket, for WebSocket keys, masks and jitter;
//! * [`ControlBuffers`] and [`DataBuffers`]: every byte of socket memory,
//!   bounded and sized by the caller (see `docs/EMBEDDED.md` for the budget).
//!
//! Modules, one job each: [`config`] (what the device announces),
//! [`connect`], [`service`], [`clock`] (the firmware's side), [`buffers`],
//! `handshake` (HTTP upgrade request/response), `ws` (RFC 6455 framing over a
//! stream, with the `embedded-websocket` state machine), `control` (the
//! control socket: welcome, open, ping/pong, go_away), `data` (one visitor
//! stream), `relay` (bytes both ways with half-close), `backoff`, and
//! [`agent`] which ties them together.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// The traits here use `async fn` without `Send` bounds on purpose: embedded
// executors (embassy) run a task's futures on one thread.
#![allow(async_fn_in_trait)]

pub mod agent;
mod backoff;
pub mod buffers;
pub mod clock;
pub mod config;
pub mod connect;
mod control;
mod data;
mod handshake;
pub mod http;
mod relay;
pub mod service;
pub mod ws;

pub use agent::{Agent, Events, Fatal};
pub use buffers::{ControlBuffers, DataBuffers};
pub use clock::Clock;
pub use config::{Config, ConfigError, Timing};
pub use connect::{Connect, Endpoint};
pub use service::{Either, LocalStream, Service};

/// Agent software name and version sent in the handshake (`agent=`).
pub const AGENT_VERSION: &str = concat!("terrier-embedded/", env!("CARGO_PKG_VERSION"));
