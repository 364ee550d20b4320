//! Opening terrier WebSockets: the way to the server (DNS, TCP, an HTTP
//! proxy's `CONNECT` tunnel, TLS for `wss://`), the control socket handshake
//! (with `307` redirects to a less loaded node) and data sockets. Each step
//! is a function of its own so that `terrier check` runs the very same code
//! one step at a time.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{AUTHORIZATION, LOCATION, SEC_WEBSOCKET_PROTOCOL};
use http::HeaderValue;
use terrier_proto::handshake::{
    status, CONTROL_PATH, DATA_PATH, PARAM_AGENT, PARAM_CHECK, PARAM_HOPS, PARAM_HTTP, PARAM_INSTANCE, PARAM_NAME,
    PARAM_PLATFORM, PARAM_POOL, PARAM_REQUESTS, PARAM_REUSE, PARAM_SESSION, PARAM_STREAM, PARAM_TCP,
};
use terrier_proto::limits::{MAX_REDIRECT_HOPS, SUBPROTOCOL};
use terrier_transport::prefixed::Prefixed;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self};
use tokio_tungstenite::WebSocketStream;
use url::Url;

use crate::proxy::{ProxyConfig, ProxyError};
use crate::tls::TlsConfig;
use crate::token::Token;
use crate::upgrade::Answer;
use crate::AgentConfig;

pub use crate::transport::Transport;
/// A control socket (tungstenite over the handshake of [`crate::upgrade`]).
pub type Socket = WebSocketStream<Prefixed<Transport>>;

/// A data socket (fastwebsockets, see `terrier_transport::data`), with the
/// bytes the server sent right after its `101` in front.
pub type DataSocket = terrier_transport::data::DataSocket<Prefixed<Transport>>;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Dns {
        /// The name looked up (the server's, or the proxy's).
        host: String,
        /// The resolver's answer.
        reason: String,
    },
    /// The server (or proxy) could not be reached or the connection broke.
    #[error("cannot reach {url}: {source}")]
    Network {
        /// The URL dialled.
        url: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The HTTP proxy did not open a tunnel.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// The TLS handshake failed (untrusted certificate, wrong name...).
    #[error("TLS with {host}: {reason}")]
    Tls {
        /// The server name verified.
        host: String,
        /// Why, in words.
        reason: String,
    },
    /// A `wss://`/`https://` URL names a port that speaks plain HTTP.
    #[error("TLS with {host}: the server does not speak TLS on this port; use http:// or ws://")]
    NotTls {
        /// The server name.
        host: String,
    },
    /// The server answered with a status other than 101.
    #[error("server refused ({status}): {reason}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's plain-text reason.
        reason: String,
    },
    /// Something answered the handshake, but not as terrierd would: most
    /// likely `--server` names another web server.
    #[error("this server answered {0} to the terrier handshake: is it terrierd? (check --server)")]
    NotTerrier(String),
    /// Too many redirects.
    #[error("more than {MAX_REDIRECT_HOPS} redirects")]
    TooManyRedirects,
    /// The handshake took too long.
    #[error("handshake with {0} timed out")]
    Timeout(String),
    /// Anything else in the WebSocket layer.
    #[error("WebSocket handshake: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// A data socket's answer was not a valid WebSocket upgrade.
    #[error("WebSocket handshake: {0}")]
    BadUpgrade(String),
}

impl HandshakeError {
    /// Retrying cannot help: the request itself is wrong (bad name, bad
    /// services) and must be fixed by the operator.
    pub fn is_fatal(&self) -> bool {
        matches!(self, HandshakeError::Rejected { status, .. } if *status == status::BAD_REQUEST)
    }

    /// A failed TLS handshake with `host`.
    pub fn from_tls(host: String, e: crate::tls::TlsError) -> Self {
        match e {
            crate::tls::TlsError::NotTls => HandshakeError::NotTls { host },
            crate::tls::TlsError::Failed(reason) => HandshakeError::Tls { host, reason },
        }
    }

    /// The name is online under another agent that keeps being replaced by
    /// this one (or under another fleet token): 409.
    pub fn is_name_conflict(&self) -> bool {
        matches!(self, HandshakeError::Rejected { status, .. } if *status == status::CONFLICT)
    }

    /// The server refused the credential: most likely a configuration error
    /// (wrong or revoked token), worth an error in the log at every attempt.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, HandshakeError::Rejected { status, .. } if *status == status::UNAUTHORIZED)
    }
}

/// How sockets reach the server: credential, proxy, trusted roots and
/// timeout. Cheap to clone into every stream task.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// Sent as `Authorization: Bearer` on every socket.
    pub token: Option<Token>,
    /// HTTP proxies and `NO_PROXY`.
    pub proxy: ProxyConfig,
    /// Roots for `wss://`; `None`: the system's.
    pub tls: Option<TlsConfig>,
    /// Bound on each step and on the whole WebSocket handshake.
    pub timeout: Duration,
}

impl Dialer {
    /// The dialer of an agent configuration.
    pub fn new(config: &AgentConfig) -> Self {
        Self {
            token: config.token.clone(),
            proxy: config.proxy.clone(),
            tls: config.tls.clone(),
            timeout: config.connect_timeout,
        }
    }

    /// The trusted roots for `wss://`.
    pub fn tls_config(&self) -> Result<TlsConfig, String> {
        match &self.tls {
            Some(tls) => Ok(tls.clone()),
            None => TlsConfig::system(),
        }
    }

    /// Connects to `url`'s host and port: directly or through the proxy,
    /// then TLS for `wss://`.
    pub async fn dial(&self, url: &Url) -> Result<Transport, HandshakeError> {
        let (host, port) = host_port(url);
        let proxy = self.proxy.for_url(url);
        let (dial_host, dial_port) = proxy.map(host_port).unwrap_or_else(|| (host.clone(), port));
        let dialled = proxy.unwrap_or(url);
        let addrs = resolve(&dial_host, dial_port, self.timeout).await?;
        let mut stream = connect_tcp(&addrs, dialled, self.timeout).await?;
        if let Some(proxy) = proxy {
            stream = crate::proxy::connect(stream, proxy, &host, port, self.timeout).await?;
        }
        if !is_tls(url) {
            return Ok(Transport::Plain(stream));
        }
        let tls = self.tls_config().map_err(|reason| HandshakeError::Tls { host: host.clone(), reason })?;
        match self.in_time(url, crate::tls::handshake(&tls, &host, stream)).await? {
            Err(e) => Err(HandshakeError::from_tls(host, e)),
            Ok(tls) => Ok(Transport::Tls(Box::new(tls))),
        }
    }

    /// Awaits `step` of the connection to `url`, or fails with
    /// [`HandshakeError::Timeout`] once the dialer's timeout is over.
    async fn in_time<T>(&self, url: &Url, step: impl std::future::Future<Output = T>) -> Result<T, HandshakeError> {
        tokio::time::timeout(self.timeout, step).await.map_err(|_| HandshakeError::Timeout(origin(url)))
    }

    /// Opens a control socket at `url` (ws/wss) accepting frames up to
    /// `max_frame`. A non-101 answer becomes [`HandshakeError::Rejected`]
    /// (with the `Location` of a 307 kept in `reason`).
    pub async fn open(&self, url: &Url, max_frame: usize) -> Result<Socket, HandshakeError> {
        let transport = self.dial(url).await?;
        self.upgrade(url, transport, max_frame).await
    }

    /// Opens a data socket at `url` accepting frames up to `max_frame`;
    /// refusals as for [`Dialer::open`].
    pub async fn open_data(&self, url: &Url, max_frame: usize) -> Result<DataSocket, HandshakeError> {
        let transport = self.dial(url).await?;
        let request = self.request(url)?;
        let io = self.in_time(url, crate::upgrade::client(transport, &request, &origin(url))).await??;
        Ok(DataSocket::new(io, terrier_transport::data::Role::Client, max_frame))
    }

    /// The handshake request for `url`: the WebSocket headers, our
    /// subprotocol and the credential.
    fn request(&self, url: &Url) -> Result<http::Request<()>, HandshakeError> {
        let mut request = url.as_str().into_client_request()?;
        request.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
        if let Some(token) = &self.token {
            request.headers_mut().insert(AUTHORIZATION, token.bearer());
        }
        Ok(request)
    }

    /// A `check=1` handshake (see [`check_url`]) over a connection that
    /// [`Dialer::dial`] opened.
    pub async fn check(&self, url: &Url, transport: Transport, max_frame: usize) -> Result<Checked, HandshakeError> {
        let request = self.request(url)?;
        match self.in_time(url, crate::upgrade::exchange(transport, &request, &origin(url))).await?? {
            Answer::Switched(io) => {
                let config = terrier_transport::ws::config(max_frame);
                let socket =
                    WebSocketStream::from_raw_socket(io, tungstenite::protocol::Role::Client, Some(config)).await;
                Ok(Checked::Connected(Box::new(socket)))
            }
            Answer::Other(response) if response.status().as_u16() == status::OK => {
                Ok(Checked::Answer(String::from_utf8_lossy(response.body()).into_owned()))
            }
            Answer::Other(response) => Err(rejected(&response)),
        }
    }

    /// The control socket handshake over a connection that [`Dialer::dial`]
    /// opened. The same handshake as a data socket's: it reads any answer,
    /// HTTP/1.0 included, so a server that is not terrierd is named as such.
    pub async fn upgrade(&self, url: &Url, transport: Transport, max_frame: usize) -> Result<Socket, HandshakeError> {
        let request = self.request(url)?;
        let io = self.in_time(url, crate::upgrade::client(transport, &request, &origin(url))).await??;
        let config = terrier_transport::ws::config(max_frame);
        Ok(WebSocketStream::from_raw_socket(io, tungstenite::protocol::Role::Client, Some(config)).await)
    }
}

/// What a `check=1` handshake got.
pub enum Checked {
    /// The server's answer: a JSON `CheckAnswer`.
    Answer(String),
    /// A server older than check mode connected the device instead.
    Connected(Box<Socket>),
}

/// The non-101 answer as an error carrying the server's reason.
pub(crate) fn rejected(response: &http::Response<Vec<u8>>) -> HandshakeError {
    let status = response.status().as_u16();
    // terrierd answers a handshake with 101 or an error, never a success
    // page: a 2xx comes from some other web server.
    if response.status().is_success() || response.status().is_informational() {
        return HandshakeError::NotTerrier(status.to_string());
    }
    let reason = if status == status::REDIRECT {
        response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    } else {
        let text = String::from_utf8_lossy(response.body()).trim().to_owned();
        if text.is_empty() {
            response.status().canonical_reason().unwrap_or("").to_owned()
        } else {
            // One line, bounded: the reason ends up in logs and events.
            text.lines().next().unwrap_or_default().chars().take(300).collect()
        }
    };
    HandshakeError::Rejected { status, reason }
}

/// The host (without IPv6 brackets) and port of a URL.
pub fn host_port(url: &Url) -> (String, u16) {
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    (host, url.port_or_known_default().unwrap_or(80))
}

/// Whether the URL asks for TLS.
pub fn is_tls(url: &Url) -> bool {
    matches!(url.scheme(), "https" | "wss")
}

/// Looks `host` up (an IP address is returned as is).
pub async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, HandshakeError> {
    let dns = |reason: String| HandshakeError::Dns { host: host.to_owned(), reason };
    let addrs = match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => return Err(dns(format!("no answer within {timeout:?}"))),
        Ok(Err(e)) => return Err(dns(e.to_string())),
        Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
    };
    if addrs.is_empty() {
        return Err(dns("no address".into()));
    }
    Ok(addrs)
}

/// Connects to the first address of `addrs` that answers.
pub async fn connect_tcp(addrs: &[SocketAddr], url: &Url, timeout: Duration) -> Result<TcpStream, HandshakeError> {
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => last = Some(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{addr}: no answer"))),
            Ok(Err(e)) => last = Some(std::io::Error::new(e.kind(), format!("{addr}: {e}"))),
            Ok(Ok(stream)) => {
                terrier_transport::tcp::tune(&stream, terrier_transport::tcp::KEEPALIVE);
                return Ok(stream);
            }
        }
    }
    let source = last.unwrap_or_else(|| std::io::Error::other("no address"));
    Err(HandshakeError::Network { url: origin(url), source })
}

/// `scheme://host:port` of a URL, for messages: the path and query of a
/// control URL (name, services, agent version) would drown the reason, and
/// a proxy's credentials must not be shown.
pub fn origin(url: &Url) -> String {
    let (host, port) = host_port(url);
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    format!("{}://{host}:{port}", url.scheme())
}

/// The control socket URL for `config` on server `base`, after `hops` redirects.
pub fn control_url(base: &Url, config: &AgentConfig, hops: u8) -> Url {
    handshake_url(base, config, hops, false)
}

/// The URL of a `check=1` handshake: what `config` would be given, without
/// connecting as the device.
pub fn check_url(base: &Url, config: &AgentConfig, hops: u8) -> Url {
    handshake_url(base, config, hops, true)
}

fn handshake_url(base: &Url, config: &AgentConfig, hops: u8, check: bool) -> Url {
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
        q.append_pair(PARAM_INSTANCE, &config.instance);
        if config.show_requests && !check {
            q.append_pair(PARAM_REQUESTS, "1");
        }
        if hops > 0 {
            q.append_pair(PARAM_HOPS, &hops.to_string());
        }
        if check {
            q.append_pair(PARAM_CHECK, "1");
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
    url.query_pairs_mut()
        .append_pair(PARAM_SESSION, session)
        .append_pair(PARAM_POOL, "1")
        .append_pair(PARAM_REUSE, "1");
    url
}

/// Opens the control socket, following up to [`MAX_REDIRECT_HOPS`] redirects.
/// Returns the socket and the server URL that accepted it (data sockets go
/// to the same node).
pub async fn open_control(config: &AgentConfig, server: &Url) -> Result<(Socket, Url), HandshakeError> {
    let dialer = Dialer::new(config);
    let mut base = server.clone();
    let mut redirected_from: Option<Url> = None;
    let mut hops = 0;
    while hops <= MAX_REDIRECT_HOPS {
        let url = control_url(&base, config, hops);
        match dialer.open(&url, config.max_control_frame_bytes).await {
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
        assert_eq!(origin(&url), "ws://localhost:8080");
        assert_eq!(origin(&Url::parse("http://u:secret@[::1]/x?y").unwrap()), "http://[::1]:80");
        let data = data_url(&Url::parse("https://t.example.com").unwrap(), "aa", "bb");
        assert_eq!(data.as_str(), "wss://t.example.com/v1/data?session=aa&stream=bb");
    }
}
