//! The tunnel endpoint: control sockets ([`control`]), data sockets
//! ([`data`]), the online devices ([`session`], [`registry`]) and the
//! WebSocket upgrade both socket kinds share ([`upgrade`]).

pub mod control;
pub mod data;
pub mod registry;
pub mod session;
pub mod traffic;
pub mod upgrade;

/// A data socket once upgraded: a WebSocket over hyper's upgraded connection.
pub type DataSocket = tokio_tungstenite::WebSocketStream<UpgradedIo>;

/// The connection under a terrier WebSocket on the server.
pub type UpgradedIo = terrier_transport::ws::Buffered<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;
