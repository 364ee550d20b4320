//! HTTP/1 client connections to a device's web service, each on its own
//! data socket, kept by the session for the requests that come next.
//!
//! A proxied request takes a ready connection of its session, or opens a
//! tunnel stream (`open`, or a pooled socket) and makes a new one with
//! hyper's HTTP/1 client; hyper's connection task then reads and writes the
//! data socket directly (as a [`ByteStream`]), with no relay task between.
//! After the answer's head the connection goes back to its session at once:
//! while the body still streams it is busy and skipped, and once the body
//! is done hyper marks it ready again.
//!
//! Why not hyper-util's pooled client: it keys its pool by scheme and
//! authority in hash maps and spawns a task per request to return a
//! connection; keeping the connections on the session costs neither
//! (measured in bench/RESULTS.md, step 11).

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use terrier_proto::handshake::HTTP_SERVICE;
use terrier_transport::byte_stream::ByteStream;
use terrier_transport::idle::{until_idle, Activity};
use tokio_util::task::TaskTracker;

use super::session::{OpenError, Session};
use super::traffic::{Metered, Side};
use crate::config::Limits;
use crate::forwarding::RequestBody;
use crate::metrics::{Metrics, StreamKind};

/// A connection to the device's web service, its bytes counted as HTTP traffic.
type DeviceStream = Metered<ByteStream<super::UpgradedIo>>;

/// A new tunnel stream to `session`'s web service.
async fn open_device_stream(session: &Session, metrics: &Arc<Metrics>) -> Result<DeviceStream, OpenError> {
    let opened = session.open_stream(HTTP_SERVICE).await?;
    let (traffic, metrics) = (session.traffic.clone(), metrics.clone());
    Ok(Metered::on_side(ByteStream::new(opened.socket), Side::Device, traffic, metrics, StreamKind::Http))
}

/// Why a request could not be sent to the device.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No tunnel stream could be opened for a new connection.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The connection failed before a whole answer head came back.
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The device took the request but sent no answer head in time.
    #[error("no answer within {0:?} (limits.device_answer_timeout)")]
    NoAnswer(Duration),
}

/// Sends `req` (origin-form URI, `Host` set) to `session`'s web service on
/// a kept connection, or a new one whose task goes on `tasks` (so the
/// node's drain waits for it); keeps at most `limits.max_idle_http_per_device`
/// connections, and waits at most `limits.device_answer_timeout` for the
/// answer's head once the request is on its way.
///
/// A kept connection that closed before taking the request (the device's
/// server timed it out) costs nothing: the request goes to the next one.
pub async fn send(
    session: &Session,
    metrics: &Arc<Metrics>,
    tasks: &TaskTracker,
    mut req: Request<RequestBody>,
    limits: &Limits,
) -> Result<Response<Incoming>, SendError> {
    let (max_kept, answer_timeout) = (limits.max_idle_http_per_device, limits.device_answer_timeout);
    let progress = req.body().progress();
    while let Some(mut sender) = session.http_connections.take_ready() {
        match answer_in_time(&progress, answer_timeout, sender.try_send_request(req)).await? {
            Ok(response) => return Ok(keep_unless_upgraded(session, sender, response, max_kept)),
            Err(mut e) => match e.take_message() {
                Some(unsent) => req = unsent,
                None => return Err(e.into_error().into()),
            },
        }
    }
    let mut sender = connect(session, metrics, tasks).await?;
    let response = answer_in_time(&progress, answer_timeout, sender.send_request(req)).await??;
    Ok(keep_unless_upgraded(session, sender, response, max_kept))
}

/// Awaits `answer` until `wait` passed without the request's body moving
/// (counted from its last bytes, or from the request when it has none).
async fn answer_in_time<T>(
    progress: &Activity,
    wait: Duration,
    answer: impl std::future::Future<Output = T>,
) -> Result<T, SendError> {
    until_idle(progress, wait, answer).await.map_err(|_| SendError::NoAnswer(wait))
}

/// Hands the connection back for the next request, unless the answer
/// switched protocols (then the connection belongs to the upgrade).
fn keep_unless_upgraded(
    session: &Session,
    sender: SendRequest<RequestBody>,
    response: Response<Incoming>,
    max_kept: usize,
) -> Response<Incoming> {
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        session.http_connections.give_back(sender, max_kept);
    }
    response
}

/// Opens a tunnel stream to the web service and starts an HTTP/1 client
/// connection on it, in a task of `tasks` that ends when the connection
/// closes or the session ends: a device that went silent must not hold a
/// visitor's request on a data socket nobody answers.
async fn connect(
    session: &Session,
    metrics: &Arc<Metrics>,
    tasks: &TaskTracker,
) -> Result<SendRequest<RequestBody>, SendError> {
    let stream = open_device_stream(session, metrics).await?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    let (device, ended) = (session.name.clone(), session.closed.clone());
    tasks.spawn(async move {
        tokio::select! {
            done = connection.with_upgrades() => if let Err(e) = done {
                tracing::debug!(%device, error = %e, "HTTP connection to the device ended");
            },
            () = ended.cancelled() => tracing::debug!(%device, "HTTP connection to the device cut: session ended"),
        }
    });
    Ok(sender)
}
