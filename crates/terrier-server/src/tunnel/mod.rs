//! The tunnel endpoint: control sockets ([`control`]), data sockets
//! ([`data`]), the online devices ([`session`], [`registry`]) and the
//! WebSocket upgrade both socket kinds share ([`upgrade`]).

pub mod control;
pub mod data;
pub mod http_connections;
pub mod registry;
pub mod requests;
pub mod session;
pub mod takeovers;
pub mod traffic;
pub mod upgrade;
pub mod upstream;

use std::sync::Arc;

use crate::auth::Auth;
use crate::cluster::nodes::Membership;
use crate::config::ServerConfig;
use crate::ingress::tcp::PortListeners;
use crate::lifecycle::Lifecycle;
use crate::live::Live;

/// What the agents' endpoint needs: the handshakes, and the sessions they
/// start.
pub struct Endpoint {
    /// URLs and ports announced to devices, the port range.
    pub config: Arc<ServerConfig>,
    /// The limits and grace period in force.
    pub live: Arc<Live>,
    /// Where sessions and data sockets run, and when to stop.
    pub lifecycle: Lifecycle,
    /// Devices online on this node.
    pub sessions: Arc<registry::Registry>,
    /// Leases in the shared store, balancing between nodes.
    pub membership: Arc<Membership>,
    /// The public TCP ports of the leases.
    pub ports: Arc<PortListeners>,
    /// Who may connect as a device.
    pub auth: Arc<Auth>,
    /// Recent takeovers of device names by other agents.
    pub takeovers: Arc<takeovers::Takeovers>,
    /// Each device's request log, handed to its sessions.
    pub request_logs: Arc<requests::RequestLogs>,
}

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
