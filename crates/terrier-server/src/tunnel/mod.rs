//! The tunnel endpoint: control sockets ([`control`]), data sockets
//! ([`data`]), the online devices ([`session`], [`registry`]) and the
//! WebSocket upgrade both socket kinds share ([`upgrade`]).

pub mod control;
pub mod data;
pub mod http_connections;
pub mod registry;
pub mod session;
pub mod traffic;
pub mod upgrade;
pub mod upstream;

/// A control socket (or the dashboard's live socket) once upgraded: a
/// tungstenite WebSocket over hyper's upgraded connection.
pub type ControlSocket = tokio_tungstenite::WebSocketStream<UpgradedIo>;

/// A data socket once upgraded: a fastwebsockets WebSocket straight over
/// hyper's upgraded connection (no buffer in between: it reads frames into
/// its own).
pub type DataSocket = terrier_transport::data::DataSocket<UpgradedIo>;

/// The connection under either socket on the server (hyper's `Upgraded`
/// keeps the bytes read past the handshake request).
pub type UpgradedIo = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;
