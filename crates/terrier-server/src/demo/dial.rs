//! The demo device's side of the WebSocket handshake with its own server:
//! the agent's exchange ([`terrier_transport::client_upgrade`]), so the
//! bytes the server sends right behind its `101` (a visitor's first request
//! bytes on a data socket) stay in front of the socket.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::SEC_WEBSOCKET_PROTOCOL;
use http::HeaderValue;
use terrier_proto::handshake::{
    status, CONTROL_PATH, DATA_PATH, PARAM_AGENT, PARAM_HOPS, PARAM_HTTP, PARAM_NAME, PARAM_PLATFORM, PARAM_SESSION,
    PARAM_STREAM,
};
use terrier_proto::limits::{MAX_CONTROL_FRAME_BYTES, MAX_DATA_FRAME_BYTES, MAX_REDIRECT_HOPS, SUBPROTOCOL};
use terrier_transport::client_upgrade::{self, Answer, UpgradeError};
use terrier_transport::prefixed::Prefixed;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::DEMO_NAME;

/// The demo device's connection to its server once upgraded.
pub type DemoIo = Prefixed<TcpStream>;
/// The demo device's control socket.
pub type ControlSocket = WebSocketStream<DemoIo>;
/// One of the demo device's data sockets.
pub type DataSocket = terrier_transport::data::DataSocket<DemoIo>;

/// How long dialling the server and its answer to a handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a socket to the server could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// No TCP connection, or it broke during the handshake.
    #[error("{server}: {source}")]
    Network {
        /// The server dialled.
        server: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// The answer was not HTTP.
    #[error("{server}: handshake: {reason}")]
    NotHttp {
        /// The server dialled.
        server: SocketAddr,
        /// What came back.
        reason: String,
    },
    /// The server answered something other than `101`.
    #[error("{server} refused ({status}): {reason}")]
    Refused {
        /// The server dialled.
        server: SocketAddr,
        /// The answer's status.
        status: u16,
        /// The first line of the answer's body.
        reason: String,
    },
    /// A `101` that is not a WebSocket upgrade for our key.
    #[error("{server}: bad upgrade: {reason}")]
    BadUpgrade {
        /// The server dialled.
        server: SocketAddr,
        /// What was wrong.
        reason: &'static str,
    },
    /// The server did not answer within [`CONNECT_TIMEOUT`].
    #[error("{server}: no answer within {CONNECT_TIMEOUT:?}")]
    Timeout {
        /// The server dialled.
        server: SocketAddr,
    },
}

impl DialError {
    /// Retrying cannot help: the server called the request malformed. The
    /// demo's request is fixed, so this is a bug, not a setting.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Refused { status: status::BAD_REQUEST, .. })
    }

    /// The server wants a device token, which the demo does not have.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Refused { status: status::UNAUTHORIZED, .. })
    }
}

/// Opens the demo device's control socket on `server`.
pub async fn control(server: SocketAddr) -> Result<ControlSocket, DialError> {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair(PARAM_NAME, DEMO_NAME)
        .append_pair(PARAM_HTTP, "1")
        .append_pair(PARAM_AGENT, concat!("terrierd-demo/", env!("CARGO_PKG_VERSION")))
        .append_pair(PARAM_PLATFORM, &format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH))
        // The demo belongs to the node that printed its URL: a device that
        // has followed the last redirect is never sent to another node.
        .append_pair(PARAM_HOPS, &MAX_REDIRECT_HOPS.to_string())
        .finish();
    let io = upgrade(server, &format!("{CONTROL_PATH}?{query}")).await?;
    let config = terrier_transport::ws::config(MAX_CONTROL_FRAME_BYTES);
    Ok(WebSocketStream::from_raw_socket(io, Role::Client, Some(config)).await)
}

/// Opens the data socket for `stream` of `session` on `server`.
pub async fn data(server: SocketAddr, session: &str, stream: &str) -> Result<DataSocket, DialError> {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair(PARAM_SESSION, session)
        .append_pair(PARAM_STREAM, stream)
        .finish();
    let io = upgrade(server, &format!("{DATA_PATH}?{query}")).await?;
    Ok(DataSocket::new(io, terrier_transport::data::Role::Client, MAX_DATA_FRAME_BYTES))
}

/// Dials `server` and upgrades `GET target` to a WebSocket, within
/// [`CONNECT_TIMEOUT`].
async fn upgrade(server: SocketAddr, target: &str) -> Result<DemoIo, DialError> {
    tokio::time::timeout(CONNECT_TIMEOUT, try_upgrade(server, target))
        .await
        .unwrap_or(Err(DialError::Timeout { server }))
}

async fn try_upgrade(server: SocketAddr, target: &str) -> Result<DemoIo, DialError> {
    let tcp = TcpStream::connect(server).await.map_err(|source| DialError::Network { server, source })?;
    // The server is this process, on this host: no keepalive needed.
    terrier_transport::tcp::tune_loopback(&tcp);
    let mut request = format!("ws://{server}{target}")
        .into_client_request()
        .map_err(|e| DialError::NotHttp { server, reason: format!("bad request {target:?}: {e}") })?;
    request.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    match client_upgrade::exchange(tcp, &request).await {
        Ok(Answer::Switched(io)) => Ok(io),
        Ok(Answer::Other(response)) => {
            let reason = String::from_utf8_lossy(response.body()).lines().next().unwrap_or_default().trim().to_owned();
            Err(DialError::Refused { server, status: response.status().as_u16(), reason })
        }
        Err(UpgradeError::Io(source)) => Err(DialError::Network { server, source }),
        Err(UpgradeError::NotHttp(reason)) => Err(DialError::NotHttp { server, reason }),
        Err(UpgradeError::BadUpgrade(reason)) => Err(DialError::BadUpgrade { server, reason }),
    }
}
