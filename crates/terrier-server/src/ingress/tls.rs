//! The TLS listener. Each connection's ClientHello is read first (under the
//! header read timeout) and routed on its SNI name *before* any decryption:
//!
//! - a device that announced a TCP service named `tls` gets the raw
//!   connection, ClientHello included, relayed to that service — TLS
//!   passthrough, so the device terminates TLS itself and the server never
//!   sees plaintext (end-to-end encryption);
//! - everything else completes the handshake here (certificate chosen by
//!   SNI, ALPN `h2` or `http/1.1`) and is served exactly like the plain
//!   listener, with `X-Forwarded-Proto: https`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use terrier_transport::prefixed::Prefixed;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;

use super::http::Front;
use super::http::{accept_until_shutdown, classify, serve_one, Target, Transport};

/// The TCP service id that asks for TLS passthrough on the device's subdomain.
pub const PASSTHROUGH_SERVICE: &str = "tls";

/// Accepts TLS connections until shutdown, then drains like the plain listener.
pub async fn serve(front: Arc<Front>, listener: TcpListener, config: Arc<rustls::ServerConfig>) {
    accept_until_shutdown(front, listener, "TLS", move |front, stream, remote| {
        accept_one(front, config.clone(), stream, remote)
    })
    .await
}

async fn accept_one(front: Arc<Front>, config: Arc<rustls::ServerConfig>, stream: TcpStream, remote: SocketAddr) {
    let deadline = tokio::time::Instant::now() + front.proxy.live.limits().header_read_timeout;
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), Recording::new(stream));
    let start = match tokio::time::timeout_at(deadline, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => return tracing::debug!(%remote, error = %e, "no valid ClientHello"),
        Err(_) => return tracing::debug!(%remote, "no ClientHello within the header read timeout"),
    };
    let sni = start.client_hello().server_name().map(str::to_ascii_lowercase);
    if let Some(session) = sni.as_deref().and_then(|name| passthrough_session(&front, name)) {
        let (hello, stream) = start.io.finish();
        return passthrough(front, session, Prefixed::new(hello.into(), stream), remote).await;
    }
    let mut start = start;
    start.io.stop_recording();
    if crate::tls::acme::challenge::is_validation(&start.client_hello()) {
        return crate::tls::acme::challenge::answer(&*front.store, &front.proxy.config, start, sni.as_deref()).await;
    }
    let tls = match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return tracing::debug!(%remote, sni = ?sni, error = %e, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%remote, "TLS handshake not done within the header read timeout"),
    };
    serve_one(front, tls, remote, Transport::Tls).await;
}

/// The online session whose subdomain `name` is, if it asked for passthrough.
fn passthrough_session(front: &Front, name: &str) -> Option<Arc<crate::tunnel::session::Session>> {
    let Target::Device(sub) = classify(name, &front.proxy.config.domain) else { return None };
    front.proxy.sessions.by_subdomain(sub).filter(|s| s.tcp.contains_key(PASSTHROUGH_SERVICE))
}

async fn passthrough(
    front: Arc<Front>,
    session: Arc<crate::tunnel::session::Session>,
    visitor: Prefixed<TcpStream>,
    remote: SocketAddr,
) {
    front.relays.relay(&session, PASSTHROUGH_SERVICE, visitor, remote, "TLS passthrough").await;
}

/// A stream that keeps a copy of what was read from it until told to stop,
/// so the ClientHello can be replayed to a passthrough device.
struct Recording<S> {
    inner: S,
    record: Option<Vec<u8>>,
}

impl<S> Recording<S> {
    fn new(inner: S) -> Self {
        Self { inner, record: Some(Vec::new()) }
    }

    fn stop_recording(&mut self) {
        self.record = None;
    }

    /// The bytes read so far and the stream.
    fn finish(self) -> (Vec<u8>, S) {
        (self.record.unwrap_or_default(), self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(record)) = (&polled, this.record.as_mut()) {
            record.extend_from_slice(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    terrier_transport::delegate_async_write!(inner);
}
