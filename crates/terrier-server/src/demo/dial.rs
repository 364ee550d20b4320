//! The demo device's side of the WebSocket handshake (RFC 6455 §4.1) with
//! its own server, on hyper's HTTP/1 client: the mirror of
//! `tunnel/upgrade.rs`. Bytes the server sends right behind its `101` (a
//! visitor's first request bytes on a data socket) stay in hyper's
//! `Upgraded`, so nothing is lost at the switch.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use terrier_proto::handshake::{
    status, CONTROL_PATH, DATA_PATH, PARAM_AGENT, PARAM_HOPS, PARAM_HTTP, PARAM_NAME, PARAM_PLATFORM, PARAM_SESSION,
    PARAM_STREAM,
};
use terrier_proto::limits::{MAX_CONTROL_FRAME_BYTES, MAX_DATA_FRAME_BYTES, MAX_REDIRECT_HOPS, SUBPROTOCOL};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::DEMO_NAME;
use crate::tunnel::{ControlSocket, DataSocket, UpgradedIo};

/// How long dialling the server and its answer to a handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a refusal's body kept (its first line is the reason).
const MAX_REASON_BYTES: usize = 4096;

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
    /// The HTTP exchange of the handshake failed.
    #[error("{server}: handshake: {source}")]
    Http {
        /// The server dialled.
        server: SocketAddr,
        /// What failed.
        source: hyper::Error,
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
async fn upgrade(server: SocketAddr, target: &str) -> Result<UpgradedIo, DialError> {
    tokio::time::timeout(CONNECT_TIMEOUT, try_upgrade(server, target))
        .await
        .unwrap_or(Err(DialError::Timeout { server }))
}

async fn try_upgrade(server: SocketAddr, target: &str) -> Result<UpgradedIo, DialError> {
    let tcp = TcpStream::connect(server).await.map_err(|source| DialError::Network { server, source })?;
    // The server is this process, on this host: no keepalive needed.
    terrier_transport::tcp::tune_loopback(&tcp);
    let http = |source| DialError::Http { server, source };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(http)?;
    let key = generate_key();
    let request = Request::get(target)
        .header(HOST, server.to_string())
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_VERSION, "13")
        .header(SEC_WEBSOCKET_KEY, &key)
        .header(SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL)
        .body(Empty::<Bytes>::new())
        .expect("a GET from valid parts");
    let exchange = async move {
        let response = sender.send_request(request).await.map_err(http)?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(refused(server, response).await);
        }
        let accept = response.headers().get(SEC_WEBSOCKET_ACCEPT).map(|v| v.as_bytes());
        if accept != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
            return Err(DialError::BadUpgrade { server, reason: "wrong Sec-WebSocket-Accept" });
        }
        hyper::upgrade::on(response).await.map_err(http)
    };
    // The connection future reads the answer; it ends by handing its socket
    // to the upgrade (or, after a refusal, once `sender` is dropped).
    let (_, upgraded) = tokio::join!(connection.with_upgrades(), exchange);
    Ok(TokioIo::new(upgraded?))
}

/// The error for a non-`101` answer: its status and its body's first line.
async fn refused(server: SocketAddr, response: http::Response<hyper::body::Incoming>) -> DialError {
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_REASON_BYTES).collect().await;
    let body = body.map(|b| b.to_bytes()).unwrap_or_default();
    let reason = String::from_utf8_lossy(&body).lines().next().unwrap_or_default().trim().to_owned();
    DialError::Refused { server, status, reason }
}
