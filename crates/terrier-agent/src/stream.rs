//! One visitor stream on the device side: dial the local service, open the
//! data socket, relay. If the service cannot be reached, tell the server
//! (`refused`) so the visitor gets a 502 page at once instead of a timeout.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use url::Url;

use crate::connect;
use crate::service::Target;

/// Everything a stream task needs, cloned out of the session.
pub struct StreamRequest {
    /// Server URL that accepted the control socket.
    pub server: Url,
    /// Session id from `welcome`.
    pub session: String,
    /// Stream id from `open`.
    pub stream: String,
    /// Service id from `open`.
    pub service: String,
    /// Where the service is on the device side.
    pub target: Target,
    /// How the data socket reaches the server (its timeout also bounds the local dial).
    pub dialer: connect::Dialer,
    /// Largest data frame accepted.
    pub max_frame: usize,
}

/// A `refused` to send on the control socket: (stream id, reason).
pub type Refusal = (String, String);

/// Runs one stream to its end. Refusals go to `refusals`.
pub async fn run(req: StreamRequest, refusals: mpsc::Sender<Refusal>) {
    let Some(local) = dial_or_refuse(&req.target, &req.stream, &req.service, req.dialer.timeout, &refusals).await
    else {
        return;
    };
    let url = connect::data_url(&req.server, &req.session, &req.stream);
    let mut socket = match req.dialer.open_data(&url, req.max_frame).await {
        Ok(socket) => socket,
        Err(e) if e.is_unauthorized() => {
            tracing::error!(stream = %req.stream, service = %req.service, error = %e, "data socket refused: check the token");
            return;
        }
        Err(e) => {
            tracing::info!(stream = %req.stream, service = %req.service, error = %e, "data socket not opened");
            return;
        }
    };
    if relay(&mut socket, local, &req.stream, &req.service).await {
        socket.close().await;
    }
}

/// Serves a stream assigned to a pooled socket: dial the local service,
/// then relay. True when the stream ended cleanly both ways, so the socket
/// can wait for its next `assign`; on a refusal or an abort it must be
/// dropped (the visitor sees the stream end).
pub async fn serve_assigned(
    socket: &mut connect::DataSocket,
    target: &Target,
    stream: &str,
    service: &str,
    timeout: Duration,
    refusals: &mpsc::Sender<Refusal>,
) -> bool {
    match dial_or_refuse(target, stream, service, timeout, refusals).await {
        Some(local) => relay(socket, local, stream, service).await,
        None => false,
    }
}

/// Relays one stream; true when it ended cleanly both ways.
async fn relay(socket: &mut connect::DataSocket, local: TcpStream, stream: &str, service: &str) -> bool {
    match terrier_transport::relay_stream(socket, local).await {
        Ok(stats) => {
            tracing::debug!(stream, service, up = stats.to_socket, down = stats.from_socket, "stream closed");
            true
        }
        Err(e) => {
            tracing::debug!(stream, service, error = %e, "stream aborted");
            false
        }
    }
}

/// Dials the local service; on failure tells the server why (`refused`).
async fn dial_or_refuse(
    target: &Target,
    stream: &str,
    service: &str,
    timeout: Duration,
    refusals: &mpsc::Sender<Refusal>,
) -> Option<TcpStream> {
    match dial_local(target, timeout).await {
        Ok(local) => Some(local),
        Err(reason) => {
            tracing::info!(stream, service, %target, %reason, "local service unreachable");
            let _ = refusals.send((stream.to_owned(), reason)).await;
            None
        }
    }
}

/// Connects to a local service, tuned for its distance.
pub(crate) async fn dial_local(target: &Target, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect((target.host.as_str(), target.port))).await {
        Ok(Ok(stream)) => {
            if target.is_loopback() {
                terrier_transport::tcp::tune_loopback(&stream);
            } else {
                terrier_transport::tcp::tune(&stream, terrier_transport::tcp::KEEPALIVE);
            }
            Ok(stream)
        }
        Ok(Err(e)) => Err(format!("{target}: {e}")),
        Err(_) => Err(format!("{target}: no answer within {timeout:?}")),
    }
}
