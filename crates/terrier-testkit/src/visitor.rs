//! A visitor: plain HTTP/1.1 requests to the server's listener with the
//! device's host in `Host`, as a browser on `<sub>.localhost` would send.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Request body type of the visitor client.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// An HTTP client aimed at one server address.
#[derive(Clone)]
pub struct Visitor {
    server: SocketAddr,
    client: Client<HttpConnector, Body>,
}

/// A response read whole.
#[derive(Debug)]
pub struct Page {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body as text (lossy).
    pub body: String,
}

impl Visitor {
    /// A client for the server at `server`.
    pub fn new(server: SocketAddr) -> Self {
        Self { server, client: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// Sends `method path` for `host` with `body`, returning the streaming response.
    pub async fn send(&self, method: &str, host: &str, path: &str, body: Body) -> Response<Incoming> {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.server, path))
            .header(http::header::HOST, host)
            .body(body)
            .expect("request");
        self.client.request(req).await.expect("visitor request")
    }

    /// `GET path` for `host`, read whole.
    pub async fn get(&self, host: &str, path: &str) -> Page {
        let empty = Empty::<Bytes>::new().map_err(|never| match never {}).boxed();
        read(self.send("GET", host, path, empty).await).await
    }

    /// `POST path` for `host` with a small body, read whole.
    pub async fn post(&self, host: &str, path: &str, body: impl Into<Bytes>) -> Page {
        let body = Full::new(body.into()).map_err(|never| match never {}).boxed();
        read(self.send("POST", host, path, body).await).await
    }
}

/// Reads a response whole.
pub async fn read(response: Response<Incoming>) -> Page {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("response body").to_bytes();
    Page { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() }
}

/// The `Host` for a device subdomain on the test domain (`localhost`).
pub fn device_host(subdomain: &str) -> String {
    format!("{subdomain}.localhost")
}

/// Opens a WebSocket to `path` on the device at `host`, through the server
/// at `server` (as a browser on the device's URL would); panics unless the
/// answer is `101`.
pub async fn websocket(
    server: SocketAddr,
    host: &str,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(server).await.expect("connect to server");
    websocket_over(tcp, host, path).await.expect("WebSocket through the tunnel")
}

/// A TCP connection to `server` from the loopback address `from`, as a
/// visitor at another address would make it.
pub async fn connect_from(from: [u8; 4], server: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((from, 0))).expect("bind the visitor's address");
    socket.connect(server).await.expect("connect")
}

/// Sends `request` (raw bytes) from the loopback address `from` and reads
/// only the answer's head, within 10 s: its status (0 if the connection
/// closed first) and the connection, the rest of the answer left unread,
/// as a visitor that stops reading would leave it.
pub async fn head_from(from: [u8; 4], server: SocketAddr, request: &[u8]) -> (u16, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = connect_from(from, server).await;
    tcp.write_all(request).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return (0, tcp),
        }
    }
    let status = String::from_utf8_lossy(&head).get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, tcp)
}

/// The WebSocket handshake for `path` on the device at `host`, over `tcp`
/// (a connection to the server); the handshake's error, such as the
/// refusing answer, otherwise.
pub async fn websocket_over(
    tcp: tokio::net::TcpStream,
    host: &str,
    path: &str,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let request = Request::builder()
        .uri(format!("ws://{host}{path}"))
        .header(http::header::HOST, host)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_VERSION, "13")
        .header(http::header::SEC_WEBSOCKET_KEY, tokio_tungstenite::tungstenite::handshake::client::generate_key())
        .body(())
        .expect("request");
    // tungstenite refuses anything but a `101`.
    Ok(tokio_tungstenite::client_async(request, tcp).await?.0)
}
