//! The tunnel endpoint: control sockets ([`control`]), data sockets
//! ([`data`]), the online devices ([`session`], [`registry`]) and the
//! WebSocket upgrade both socket kinds share ([`upgrade`]).

pub mod control;
pub mod data;
pub mod registry;
pub mod session;
pub mod traffic;
pub mod upgrade;

/// A control socket (or the dashboard's live socket) once upgraded: a
/// tungstenite WebSocket over hyper's upgraded connection.
pub type ControlSocket = tokio_tungstenite::WebSocketStream<UpgradedIo>;

/// The connection under a control socket on the server.
pub type UpgradedIo = terrier_transport::ws::Buffered<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// A data socket once upgraded: a fastwebsockets WebSocket straight over
/// hyper's upgraded connection (no buffer in between: it reads frames into
/// its own).
pub type DataSocket = terrier_transport::data::DataSocket<DataIo>;

/// The connection under a data socket on the server.
pub type DataIo = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;
