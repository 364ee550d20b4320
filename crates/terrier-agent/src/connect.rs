//! Opening terrier WebSockets: the control socket handshake (with `307`
//! redirects to a less loaded node) and data sockets. The transport is plain
//! TCP here; TLS and HTTP proxies wrap [`dial`] without touching the rest.

use std::time::Duration;

use http::header::{LOCATION, SEC_WEBSOCKET_PROTOCOL};
use http::HeaderValue;
use terrier_proto::handshake::{
    status, CONTROL_PATH, DATA_PATH, PARAM_AGENT, PARAM_HOPS, PARAM_HTTP, PARAM_NAME, PARAM_PLATFORM, PARAM_POOL,
    PARAM_SESSION, PARAM_STREAM, PARAM_TCP,
};
use terrier_proto::limits::{MAX_REDIRECT_HOPS, SUBPROTOCOL};
use terrier_transport::ws::Kind;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self};
use tokio_tungstenite::WebSocketStream;
use url::Url;

use crate::AgentConfig;

/// The byte stream under a terrier WebSocket.
pub type Transport = TcpStream;
/// A terrier WebSocket (control or data).
pub type Socket = WebSocketStream<Transport>;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The server could not be reached or the connection broke.
    #[error("cannot reach {url}: {source}")]
    Network {
        /// The URL dialled.
        url: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The server answered with a status other than 101.
    #[error("server refused ({status}): {reason}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's plain-text reason.
        reason: String,
    },
    /// Too many redirects.
    #[error("more than {MAX_REDIRECT_HOPS} redirects")]
    TooManyRedirects,
    /// The handshake took too long.
    #[error("handshake with {0} timed out")]
    Timeout(String),
    /// Anything else in the WebSocket layer.
    #[error("WebSocket handshake: {0}")]
    WebSocket(#[from] tungstenite::Error),
}

impl HandshakeError {
    /// Retrying cannot help: the request itself is wrong (bad name, bad
    /// services) and must be fixed by the operator.
    pub fn is_fatal(&self) -> bool {
        matches!(self, HandshakeError::Rejected { status, .. } if *status == status::BAD_REQUEST)
    }
}

/// Connects to `url`'s host and port (the plain-TCP transport).
pub async fn dial(url: &Url, timeout: Duration) -> Result<Transport, HandshakeError> {
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let network = |source| HandshakeError::Network { url: url.to_string(), source };
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| HandshakeError::Timeout(url.to_string()))?
        .map_err(network)?;
    terrier_transport::tcp::tune(&stream, terrier_transport::tcp::KEEPALIVE);
    Ok(stream)
}

/// Opens a WebSocket at `url` (ws/wss). A non-101 answer becomes
/// [`HandshakeError::Rejected`] (with the `Location` of a 307 kept in `reason`).
pub async fn open(url: &Url, kind: Kind, max_frame: usize, timeout: Duration) -> Result<Socket, HandshakeError> {
    let stream = dial(url, timeout).await?;
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    let config = terrier_transport::ws::config(kind, max_frame);
    let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
    match tokio::time::timeout(timeout, handshake).await {
        Err(_) => Err(HandshakeError::Timeout(url.to_string())),
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let reason = if status == status::REDIRECT {
                response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
            } else {
                let body = response.body().as_deref().unwrap_or_default();
                let text = String::from_utf8_lossy(body).trim().to_owned();
                if text.is_empty() {
                    response.status().canonical_reason().unwrap_or("").to_owned()
                } else {
                    text
                }
            };
            Err(HandshakeError::Rejected { status, reason })
        }
        Ok(Err(e)) => Err(e.into()),
    }
}

/// The control socket URL for `config` on server `base`, after `hops` redirects.
pub fn control_url(base: &Url, config: &AgentConfig, hops: u8) -> Url {
    let mut url = ws_url(base);
    url.set_path(CONTROL_PATH);
    url.set_query(None);
    {
        let mut q = url.query_pairs_mut();
        q.append_pair(PARAM_NAME, &config.name);
        if config.http.is_some() {
            q.append_pair(PARAM_HTTP, "1");
        }
        if !config.tcp.is_empty() {
            let ids: Vec<&str> = config.tcp.iter().map(|s| s.id.as_str()).collect();
            q.append_pair(PARAM_TCP, &ids.join(","));
        }
        q.append_pair(PARAM_AGENT, concat!("terrier/", env!("CARGO_PKG_VERSION")));
        q.append_pair(PARAM_PLATFORM, &format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH));
        if hops > 0 {
            q.append_pair(PARAM_HOPS, &hops.to_string());
        }
    }
    url
}

/// The data socket URL for one stream.
pub fn data_url(base: &Url, session: &str, stream: &str) -> Url {
    let mut url = ws_url(base);
    url.set_path(DATA_PATH);
    url.set_query(None);
    url.query_pairs_mut().append_pair(PARAM_SESSION, session).append_pair(PARAM_STREAM, stream);
    url
}

/// The URL of an idle pooled data socket for `session`.
pub fn pool_url(base: &Url, session: &str) -> Url {
    let mut url = ws_url(base);
    url.set_path(DATA_PATH);
    url.set_query(None);
    url.query_pairs_mut().append_pair(PARAM_SESSION, session).append_pair(PARAM_POOL, "1");
    url
}

/// Opens the control socket, following up to [`MAX_REDIRECT_HOPS`] redirects.
/// Returns the socket and the server URL that accepted it (data sockets go
/// to the same node).
pub async fn open_control(config: &AgentConfig, server: &Url) -> Result<(Socket, Url), HandshakeError> {
    let mut base = server.clone();
    let mut redirected_from: Option<Url> = None;
    let mut hops = 0;
    while hops <= MAX_REDIRECT_HOPS {
        let url = control_url(&base, config, hops);
        match open(&url, Kind::Control, config.max_control_frame_bytes, config.connect_timeout).await {
            Ok(socket) => return Ok((socket, base)),
            Err(HandshakeError::Rejected { status, reason }) if status == status::REDIRECT => {
                tracing::info!(from = %base, to = %reason, "redirected to another node");
                let target = Url::parse(&reason)
                    .map_err(|_| HandshakeError::Rejected { status, reason: format!("bad redirect {reason:?}") })?;
                redirected_from = Some(std::mem::replace(&mut base, target));
                hops += 1;
            }
            // The node we were sent to is unreachable (it may have just
            // died): go back to the node that redirected us, with the hop
            // count at its limit so it keeps us.
            Err(HandshakeError::Network { .. } | HandshakeError::Timeout(_)) if redirected_from.is_some() => {
                base = redirected_from.take().expect("checked");
                tracing::info!(back_to = %base, "redirect target unreachable; returning to the redirecting node");
                hops = MAX_REDIRECT_HOPS;
            }
            Err(e) => return Err(e),
        }
    }
    Err(HandshakeError::TooManyRedirects)
}

/// `base` with its scheme mapped to ws/wss (http -> ws, https -> wss).
fn ws_url(base: &Url) -> Url {
    let mut url = base.clone();
    let scheme = match base.scheme() {
        "https" | "wss" => "wss",
        _ => "ws",
    };
    // Switching between these special schemes always succeeds.
    let _ = url.set_scheme(scheme);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_protocol_parameters() {
        let config = AgentConfig {
            server: Url::parse("http://localhost:8080").unwrap(),
            name: "thermo-42".into(),
            http: Some(crate::Service::http("80".parse().unwrap())),
            tcp: vec![crate::Service::parse_tcp("22").unwrap(), crate::Service::parse_tcp("mqtt=1883").unwrap()],
            ..AgentConfig::default()
        };
        let url = control_url(&config.server, &config, 1);
        assert_eq!(url.scheme(), "ws");
        assert_eq!(url.path(), "/v1/control");
        let q = url.query().unwrap();
        assert!(q.starts_with("name=thermo-42&http=1&tcp=22%2Cmqtt&agent=terrier%2F"), "{q}");
        assert!(q.ends_with("&hops=1"));
        let data = data_url(&Url::parse("https://t.example.com").unwrap(), "aa", "bb");
        assert_eq!(data.as_str(), "wss://t.example.com/v1/data?session=aa&stream=bb");
    }
}
