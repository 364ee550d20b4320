//! Server side of the WebSocket handshake (RFC 6455 §4.2) on hyper: check the
//! request, answer `101`, and turn the upgraded connection into a WebSocket.
//! Bytes the agent sent right after its request (already read by hyper) are
//! kept by hyper's `Upgraded`, so nothing is lost at the switch.

use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use terrier_proto::limits::SUBPROTOCOL;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::{ControlSocket, DataSocket};

/// Checks that `headers` ask for a version-13 WebSocket upgrade; returns the
/// `101` response to send, or a reason for a 400.
pub fn accept(headers: &HeaderMap) -> Result<Response<()>, &'static str> {
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))).unwrap_or(false))
    };
    if !has_token(UPGRADE, "websocket") || !has_token(CONNECTION, "upgrade") {
        return Err("expected a WebSocket upgrade (Upgrade: websocket)");
    }
    if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err("unsupported Sec-WebSocket-Version (need 13)");
    }
    let key = headers.get(SEC_WEBSOCKET_KEY).ok_or("missing Sec-WebSocket-Key")?;
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()));
    if has_token(SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL) {
        response = response.header(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    }
    response.body(()).map_err(|_| "bad WebSocket key")
}

/// Waits for hyper to hand over the upgraded connection and wraps it as a
/// server-side control WebSocket accepting frames up to `max_frame_bytes`.
pub async fn websocket(on_upgrade: OnUpgrade, max_frame_bytes: usize) -> Result<ControlSocket, hyper::Error> {
    let upgraded = on_upgrade.await?;
    let config = terrier_transport::ws::config(max_frame_bytes);
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await)
}

/// Waits for hyper to hand over the upgraded connection and wraps it as a
/// server-side data socket accepting frames up to `max_frame_bytes`. Bytes
/// the agent sent after its request stay in hyper's `Upgraded`.
pub async fn data_socket(on_upgrade: OnUpgrade, max_frame_bytes: usize) -> Result<DataSocket, hyper::Error> {
    let upgraded = on_upgrade.await?;
    Ok(DataSocket::new(TokioIo::new(upgraded), terrier_transport::data::Role::Server, max_frame_bytes))
}
