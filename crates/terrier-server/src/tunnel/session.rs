//! One online device: its lease, the queue to its control socket, and the
//! visitor streams waiting for their data socket.
//!
//! A visitor (HTTP or TCP ingress) calls [`Session::open_stream`]: it draws a
//! stream id, queues `open` on the control socket and waits for the data
//! socket ([`crate::tunnel::data`] hands it over) or for `refused`. Stream
//! ids are single use and live only in this session's table, so a data socket
//! must name both the session and the stream to claim a visitor.
//!
//! Pooled data sockets skip `open`: an idle one gets the stream with
//! `assign`. One parked with `reuse=1` comes back to the pool after a stream
//! that ended cleanly ([`Session::relay`]), so a steady trickle of visitors
//! costs the agent no new WebSocket handshake per visitor.
//!
//! Before opening a stream, an ingress takes a [`VisitorSlot`] with
//! [`Session::admit`]: each visitor address gets only a share of the
//! device's streams, and all of them together no more than the device's
//! total ([`crate::visitors`]).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use terrier_proto::messages::{Open, ServerMessage};
use terrier_transport::ids::random_id;
use terrier_transport::{RelayError, RelayStats};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::DataSocket;
use crate::config::Limits;
pub use crate::visitors::VisitorSlot;
use crate::visitors::{Full, VisitorKey, Visitors};

/// An online device as this node sees it.
pub struct Session {
    /// Session id (told to the agent in `welcome`, quoted by data sockets).
    pub id: String,
    /// Device name.
    pub name: String,
    /// The device's subdomain label.
    pub subdomain: String,
    /// Does the device serve HTTP on its subdomain?
    pub http: bool,
    /// Public port of each TCP service.
    pub tcp: BTreeMap<String, u16>,
    /// Agent software (`terrier/0.1.0`), for logs.
    pub agent: String,
    /// Agent platform (`linux-aarch64`), for the admin API.
    pub platform: String,
    /// Who connected: the agent's address and its per-process `instance`
    /// id (older agents send none).
    pub agent_at: AgentAt,
    /// When the session started, Unix ms.
    pub since_ms: u64,
    /// Bytes and streams, for the admin API.
    pub traffic: Arc<super::traffic::Traffic>,
    /// The device's request log (it outlives the session).
    pub requests: super::requests::LogHold,
    /// Did the agent ask to be told of each request (`requests=1`)?
    pub show_requests: bool,
    /// How the device authenticated; data sockets must match it.
    pub identity: crate::auth::Identity,
    /// Frames to send on the control socket (bounded: back-pressure).
    control: mpsc::Sender<Message>,
    /// Cancelled when the session ends (control socket gone or replaced).
    pub closed: CancellationToken,
    /// Close code to send when `closed` fires (replaced, shutting down...).
    close_code: Mutex<Option<u16>>,
    /// Visitor streams waiting for their data socket, by stream id.
    pending: Mutex<HashMap<String, oneshot::Sender<StreamReply>>>,
    /// Limit on `pending`.
    max_pending: usize,
    /// How long a visitor waits for its data socket.
    open_timeout: Duration,
    /// Idle pooled data sockets the agent opened ahead of visitors, the
    /// most recently parked last.
    pool: Mutex<Vec<Parked>>,
    /// Limit on `pool`.
    max_pool: usize,
    /// How long a pooled socket may sit idle before it is closed.
    pool_idle: Duration,
    /// The streams visitors hold, per address and in all, against
    /// `limits.max_streams_per_visitor` and `limits.max_streams_per_device`.
    visitors: Visitors,
    /// HTTP/1 connections to the device's web service, kept for the next
    /// proxied request.
    pub http_connections: super::http_connections::HttpConnections,
}

/// How long sending `assign` on a pooled socket may take before the socket
/// counts as dead.
const POOL_ASSIGN_TIMEOUT: Duration = Duration::from_secs(2);

/// An idle pooled data socket.
struct Parked {
    /// When it was parked (or came back after its last stream).
    since: Instant,
    /// The socket.
    socket: DataSocket,
    /// Parked with `reuse=1`.
    reusable: bool,
}

/// The data socket of a new visitor stream.
pub struct StreamSocket {
    /// The socket, ready to carry the visitor's bytes.
    pub socket: DataSocket,
    /// A pooled socket the agent takes back after the stream (`reuse=1`).
    reusable: bool,
}

/// How the agent answered an `open`.
pub enum StreamReply {
    /// The agent opened the data socket.
    Socket(Box<DataSocket>),
    /// The agent could not reach its local service.
    Refused(String),
}

/// Why a visitor stream could not be opened; each maps to a status page.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The session ended before the stream opened.
    #[error("device went offline")]
    Offline,
    /// Too many visitors are already waiting for this device.
    #[error("too many pending streams for this device")]
    TooManyPending,
    /// The device already has its most streams open.
    #[error("too many open streams for this device (limits.max_streams_per_device)")]
    TooManyStreams,
    /// This visitor's address already holds its share of the device's streams.
    #[error("too many open streams from {0} to this device (limits.max_streams_per_visitor)")]
    TooManyForVisitor(VisitorKey),
    /// The agent did not open the data socket in time.
    #[error("device did not answer within {0:?}")]
    Timeout(Duration),
    /// The agent could not reach the local service.
    #[error("device refused: {0}")]
    Refused(String),
}

/// Where an agent connected from, and which running agent it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAt {
    /// The control socket's peer address.
    pub remote: SocketAddr,
    /// The agent's per-process id, when it sends one.
    pub instance: Option<String>,
}

impl AgentAt {
    /// Is `other` the same running agent? By `instance` when both have one
    /// (an agent keeps it across new addresses), else by IP address.
    pub fn same_agent(&self, other: &AgentAt) -> bool {
        match (&self.instance, &other.instance) {
            (Some(a), Some(b)) => a == b,
            _ => self.remote.ip() == other.remote.ip(),
        }
    }
}

/// What a new session is made of.
pub struct SessionInit {
    /// Session id.
    pub id: String,
    /// Device name.
    pub name: String,
    /// Subdomain label.
    pub subdomain: String,
    /// Serves HTTP.
    pub http: bool,
    /// TCP ports.
    pub tcp: BTreeMap<String, u16>,
    /// Agent software.
    pub agent: String,
    /// Agent platform.
    pub platform: String,
    /// Who connected.
    pub agent_at: AgentAt,
    /// The device's request log.
    pub requests: super::requests::LogHold,
    /// The agent asked to be told of each request.
    pub show_requests: bool,
    /// Limit on pending streams.
    pub max_pending: usize,
    /// Wait for a data socket.
    pub open_timeout: Duration,
    /// Limit on idle pooled data sockets.
    pub max_pool: usize,
    /// Idle lifetime of a pooled data socket.
    pub pool_idle: Duration,
    /// How the device authenticated.
    pub identity: crate::auth::Identity,
}

impl Session {
    /// Creates a session and the receiving end of its control queue;
    /// `closed` is cancelled when the session must end (a child of the
    /// node's shutdown token).
    pub fn new(init: SessionInit, queue: usize, closed: CancellationToken) -> (Arc<Self>, mpsc::Receiver<Message>) {
        let (control, rx) = mpsc::channel(queue);
        let session = Arc::new(Self {
            id: init.id,
            name: init.name,
            subdomain: init.subdomain,
            http: init.http,
            tcp: init.tcp,
            agent: init.agent,
            platform: init.platform,
            agent_at: init.agent_at,
            requests: init.requests,
            show_requests: init.show_requests,
            since_ms: crate::store::now_ms(),
            traffic: Arc::default(),
            identity: init.identity,
            control,
            closed,
            close_code: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            max_pending: init.max_pending,
            open_timeout: init.open_timeout,
            pool: Mutex::new(Vec::new()),
            max_pool: init.max_pool,
            pool_idle: init.pool_idle,
            visitors: Visitors::default(),
            http_connections: Default::default(),
        });
        (session, rx)
    }

    /// Logs a forwarded request (at most `keep` kept), and tells the agent
    /// of it if it asked; never waits: with the control queue full, the
    /// agent misses this one.
    pub fn log_request(&self, record: super::requests::RequestRecord, keep: usize) {
        if self.show_requests {
            let path: String = record.path.chars().take(200).map(terrier_proto::messages::plain_char).collect();
            let seen = terrier_proto::messages::RequestSeen {
                method: record.method.as_str(),
                path: &path,
                status: record.status,
                duration_ms: record.duration_ms,
                size: record.size,
            };
            let _ = self.control.try_send(terrier_transport::control::encode(&ServerMessage::Request(seen)));
        }
        self.requests.log(record, keep);
    }

    /// Counts one more stream from the visitor at `ip` (IPv6: its /64)
    /// against its share, `limits.max_streams_per_visitor`, and against the
    /// device's `limits.max_streams_per_device` (both read by the caller
    /// from the live limits, so a reload meets the next visitor). Call
    /// before [`Session::open_stream`] and keep the slot for as long as the
    /// visitor's stream (or request) lasts; dropping it gives the place
    /// back. Counted under one lock, so visitors arriving together cannot
    /// all slip past either limit.
    pub fn admit(&self, ip: IpAddr, limits: &Limits) -> Result<VisitorSlot, OpenError> {
        match self.visitors.admit(ip, limits.max_streams_per_visitor, limits.max_streams_per_device) {
            Ok(slot) => Ok(slot),
            Err(Full::Visitor) => Err(OpenError::TooManyForVisitor(VisitorKey::of(ip))),
            Err(Full::Device) => {
                tracing::info!(device = %self.name, "stream refused: device at limits.max_streams_per_device");
                Err(OpenError::TooManyStreams)
            }
        }
    }

    /// A data socket for a new stream to `service`: an idle pooled one at
    /// once if the agent keeps a pool, otherwise asks the device with `open`
    /// and waits for its data socket. The caller holds a [`VisitorSlot`]
    /// from [`Session::admit`], which bounds the streams a device has;
    /// streams still waiting for their socket are bounded by `max_pending`
    /// on top of that.
    pub async fn open_stream(&self, service: &str) -> Result<StreamSocket, OpenError> {
        let stream = random_id();
        if let Some(socket) = self.assign_pooled(&stream, service).await {
            return Ok(socket);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("pending lock");
            if pending.len() >= self.max_pending {
                return Err(OpenError::TooManyPending);
            }
            pending.insert(stream.clone(), tx);
        }
        // Whatever happens next, the id must not outlive this call.
        let _forget = PendingGuard { session: self, stream: &stream };
        let open = terrier_transport::control::encode(&ServerMessage::Open(Open { stream: &stream, service }));
        tracing::debug!(device = %self.name, %stream, service, "open stream");
        let wait = async {
            self.control.send(open).await.map_err(|_| OpenError::Offline)?;
            rx.await.map_err(|_| OpenError::Offline)
        };
        let reply = tokio::select! {
            reply = tokio::time::timeout(self.open_timeout, wait) => reply,
            () = self.closed.cancelled() => return Err(OpenError::Offline),
        };
        match reply {
            Ok(Ok(StreamReply::Socket(ws))) => Ok(StreamSocket { socket: *ws, reusable: false }),
            Ok(Ok(StreamReply::Refused(reason))) => Err(OpenError::Refused(reason)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                tracing::info!(device = %self.name, %stream, service, "device did not open the data socket in time");
                Err(OpenError::Timeout(self.open_timeout))
            }
        }
    }

    /// Parks an idle pooled data socket (`reusable`: parked with
    /// `reuse=1`); gives it back when the session is over or the pool full.
    pub fn add_pooled(&self, socket: DataSocket, reusable: bool) -> Result<(), DataSocket> {
        let mut pool = self.pool.lock().expect("pool lock");
        // Checked under the lock: `clear_pool` runs after `closed` fires.
        if self.closed.is_cancelled() || pool.len() >= self.max_pool {
            return Err(socket);
        }
        pool.push(Parked { since: Instant::now(), socket, reusable });
        Ok(())
    }

    /// Closes what the session keeps and no visitor used for too long:
    /// pooled sockets past `limits.pool_idle_timeout` (the agent opens
    /// fresh ones) and HTTP connections past `http_idle` (read live). The
    /// counterpart of [`Session::clear_pool`], run on each control tick.
    pub fn prune_idle(&self, http_idle: Duration) {
        let sockets = {
            let mut pool = self.pool.lock().expect("pool lock");
            let before = pool.len();
            pool.retain(|parked| parked.since.elapsed() < self.pool_idle);
            before - pool.len()
        };
        let connections = self.http_connections.prune(http_idle);
        if sockets + connections > 0 {
            tracing::debug!(device = %self.name, sockets, connections,
                "closed pooled data sockets and HTTP connections left unused past their idle timeouts");
        }
    }

    /// Hands `stream` to an idle pooled socket with `assign`; `None` when the
    /// pool is empty (or every socket in it turned out dead).
    async fn assign_pooled(&self, stream: &str, service: &str) -> Option<StreamSocket> {
        loop {
            // Most recently parked first: the least likely to have gone stale.
            let Parked { since, mut socket, reusable } = self.pool.lock().expect("pool lock").pop()?;
            if since.elapsed() >= self.pool_idle {
                continue;
            }
            let assign = terrier_transport::control::to_json(&ServerMessage::Assign(Open { stream, service }));
            match tokio::time::timeout(POOL_ASSIGN_TIMEOUT, socket.send_text(&assign)).await {
                Ok(Ok(())) => {
                    tracing::debug!(device = %self.name, %stream, service, "stream assigned to a pooled socket");
                    return Some(StreamSocket { socket, reusable });
                }
                _ => tracing::debug!(device = %self.name, "dropping a dead pooled socket"),
            }
        }
    }

    /// Relays one visitor stream over its data socket. Afterwards a socket
    /// parked with `reuse=1` whose stream ended cleanly both ways goes back
    /// to the pool; any other is closed.
    pub async fn relay<T>(&self, stream: StreamSocket, io: T) -> Result<RelayStats, RelayError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let StreamSocket { mut socket, reusable } = stream;
        let stats = terrier_transport::relay_stream(&mut socket, io).await?;
        let unused = if reusable { self.add_pooled(socket, true).err() } else { Some(socket) };
        match unused {
            Some(socket) => socket.close().await,
            None => tracing::debug!(device = %self.name, "pooled socket back in the pool"),
        }
        Ok(stats)
    }

    /// Closes the idle pooled sockets and drops the kept HTTP connections
    /// (the session ended).
    pub fn clear_pool(&self) {
        self.pool.lock().expect("pool lock").clear();
        self.http_connections.clear();
    }

    /// Idle pooled data sockets right now.
    pub fn pooled_count(&self) -> usize {
        self.pool.lock().expect("pool lock").len()
    }

    /// Takes the waiting visitor of `stream`; `None` if unknown, expired or used.
    pub fn take_pending(&self, stream: &str) -> Option<oneshot::Sender<StreamReply>> {
        self.pending.lock().expect("pending lock").remove(stream)
    }

    /// The agent reported it could not reach the service of `stream`.
    pub fn refuse(&self, stream: &str, reason: &str) {
        if let Some(tx) = self.take_pending(stream) {
            tracing::info!(device = %self.name, %stream, reason, "device refused stream");
            let _ = tx.send(StreamReply::Refused(reason.to_owned()));
        }
    }

    /// Ends the session, telling the agent why with a close code.
    pub fn close(&self, code: u16) {
        self.close_code.lock().expect("close lock").get_or_insert(code);
        self.closed.cancel();
    }

    /// The close code set by [`Session::close`], if any.
    pub fn close_code(&self) -> Option<u16> {
        *self.close_code.lock().expect("close lock")
    }
}

/// Removes a stream id from the pending table when its visitor stops waiting.
struct PendingGuard<'a> {
    session: &'a Session,
    stream: &'a str,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.session.take_pending(self.stream);
    }
}
