//! The protocol spoken by hand, for tests that must do what a real agent
//! never would: a [`FakeDevice`] that completes the control handshake and
//! reports every `open` but opens no data socket unless the test does, and
//! [`claim`] to open a data socket for any (session, stream) pair, with or
//! without a credential.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Bound on one network step (a handshake, a frame).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A control or data socket opened by these helpers.
pub type ClientSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A handshake the server answered with an HTTP error instead of `101`.
#[derive(Debug)]
pub struct Refused {
    /// HTTP status.
    pub status: u16,
    /// The plain-text reason.
    pub body: String,
}

/// A device speaking the protocol by hand.
pub struct FakeDevice {
    /// Session id from `welcome`.
    pub session: String,
    /// Subdomain from `welcome`.
    pub subdomain: String,
    /// Stream ids from `open` messages, in order.
    opens: mpsc::Receiver<String>,
    /// The close code the server ended the control socket with, once it did.
    closed: mpsc::Receiver<Option<u16>>,
    reader: JoinHandle<()>,
}

impl FakeDevice {
    /// Connects an HTTP device `name` without a credential; panics if refused.
    pub async fn connect(addr: SocketAddr, name: &str) -> Self {
        Self::connect_with(addr, name, None).await.unwrap_or_else(|r| panic!("control handshake refused: {r:?}"))
    }

    /// Connects an HTTP device `name` presenting `token` (as the agent does:
    /// `Authorization: Bearer`), or says how the server refused it.
    pub async fn connect_with(addr: SocketAddr, name: &str, token: Option<&str>) -> Result<Self, Refused> {
        Self::connect_query(addr, &format!("name={name}&http=1"), token).await
    }

    /// Connects with the control handshake's whole `query` (to set `hops`,
    /// say), presenting `token`, or says how the server refused it.
    pub async fn connect_query(addr: SocketAddr, query: &str, token: Option<&str>) -> Result<Self, Refused> {
        let url = format!("ws://{addr}/v1/control?{query}");
        let mut control = handshake(addr, &url, token).await?;
        let welcome = next_json(&mut control).await.expect("welcome");
        let field = |key: &str| {
            welcome["welcome"][key].as_str().unwrap_or_else(|| panic!("{key} in welcome {welcome}")).to_owned()
        };
        let (session, subdomain) = (field("session"), field("subdomain"));
        let (open_tx, opens) = mpsc::channel(16);
        let (closed_tx, closed) = mpsc::channel(1);
        // Reading also answers the server's pings, so the session stays up.
        let reader = tokio::spawn(async move {
            let code = loop {
                match control.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let msg: serde_json::Value = serde_json::from_str(text.as_str()).expect("control JSON");
                        if let Some(stream) = msg["open"]["stream"].as_str() {
                            let _ = open_tx.send(stream.to_owned()).await;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                    Some(Err(_)) | None => break None,
                    Some(Ok(_)) => {}
                }
            };
            let _ = closed_tx.send(code).await;
        });
        Ok(Self { session, subdomain, opens, closed, reader })
    }

    /// The stream id of the next `open`.
    pub async fn next_open(&mut self) -> String {
        timeout(STEP_TIMEOUT, self.opens.recv())
            .await
            .expect("an open within the step timeout")
            .expect("control socket still up")
    }

    /// Waits up to `within` for the server to close the control socket;
    /// the close code it sent (`None`: closed without one), or `Err` if
    /// the socket is still open.
    pub async fn closed_within(&mut self, within: Duration) -> Result<Option<u16>, ()> {
        timeout(within, self.closed.recv()).await.map_err(|_| ()).map(Option::flatten)
    }
}

impl Drop for FakeDevice {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The next text frame as JSON; `None` when the socket ends.
pub async fn next_json(socket: &mut ClientSocket) -> Option<serde_json::Value> {
    loop {
        match socket.next().await? {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(text.as_str()).expect("control JSON")),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Opens a data socket for (`session`, `stream`) without a credential: the
/// socket on `101`, or the status the server answered with.
pub async fn claim(addr: SocketAddr, session: &str, stream: &str) -> Result<ClientSocket, u16> {
    claim_with(addr, session, stream, None).await.map_err(|r| r.status)
}

/// Opens a data socket for (`session`, `stream`) presenting `token`.
pub async fn claim_with(
    addr: SocketAddr,
    session: &str,
    stream: &str,
    token: Option<&str>,
) -> Result<ClientSocket, Refused> {
    let mut url = url::Url::parse(&format!("ws://{addr}/v1/data")).expect("url");
    url.query_pairs_mut().append_pair("session", session).append_pair("stream", stream);
    handshake(addr, url.as_str(), token).await
}

/// A WebSocket client handshake to `url` on `addr`, with an optional bearer token.
pub async fn handshake(addr: SocketAddr, url: &str, token: Option<&str>) -> Result<ClientSocket, Refused> {
    let mut request = url.into_client_request().expect("request");
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("header value");
        request.headers_mut().insert(http::header::AUTHORIZATION, value);
    }
    let tcp = TcpStream::connect(addr).await.expect("connect");
    match timeout(STEP_TIMEOUT, tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)))
        .await
        .expect("handshake answered in time")
    {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            Err(Refused { status, body })
        }
        Err(e) => panic!("handshake to {url} failed: {e}"),
    }
}
