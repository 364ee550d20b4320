//! Pooled data sockets (`--pool N`): idle, authenticated data sockets opened
//! ahead of visitors, so a visitor does not wait for a WebSocket handshake.
//!
//! The server gives an idle socket a visitor by sending `assign` as its next
//! frame. The socket is opened with `reuse=1`: when its stream has ended
//! cleanly both ways it is idle again and waits for the next `assign` (or
//! for the server to close it), so a steady trickle of visitors costs no
//! handshake at all (docs/PROTOCOL.md §4.3).
//!
//! Refilling is lazy for the same reason: the pool opens sockets only when
//! fewer than half of `N` (at least one) are idle or on their way, and then
//! tops up to `N`. Sockets that come back after a burst can leave more than
//! `N` idle; the server caps them (`limits.max_pool_sockets`) and closes the
//! ones left unused for `limits.pool_idle_timeout`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use terrier_proto::messages::ServerMessage;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::connect::{self, DataSocket};
use crate::stream::{self, Refusal};
use crate::AgentConfig;

/// Wait after a pooled socket could not be opened, before its place is refilled.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The pool of one session: what the session hands it.
pub struct Pool {
    /// The agent configuration (targets, timeouts).
    pub config: AgentConfig,
    /// Server URL that accepted the control socket.
    pub server: Url,
    /// Session id from `welcome`.
    pub session: String,
    /// Where assigned streams run.
    pub streams: TaskTracker,
    /// Refusals for the control socket.
    pub refusals: mpsc::Sender<Refusal>,
}

/// How many sockets are idle or being opened; the refiller waits on `low`.
struct Counts {
    /// Open and waiting for `assign`.
    idle: AtomicUsize,
    /// Handshake under way.
    opening: AtomicUsize,
    /// Below this many idle or opening sockets, the pool refills.
    low_water: usize,
    /// Signalled when a count drops below `low_water`.
    low: Notify,
}

impl Counts {
    fn new(low_water: usize) -> Self {
        Self { idle: AtomicUsize::new(0), opening: AtomicUsize::new(0), low_water, low: Notify::new() }
    }

    fn available(&self) -> usize {
        self.idle.load(Ordering::Relaxed) + self.opening.load(Ordering::Relaxed)
    }

    fn is_low(&self) -> bool {
        self.available() < self.low_water
    }

    /// Takes one off `count`, waking the refiller only if that leaves the
    /// pool low, not for every visitor.
    fn drop_one(&self, count: &AtomicUsize) {
        count.fetch_sub(1, Ordering::Relaxed);
        if self.is_low() {
            self.low.notify_one();
        }
    }
}

/// What every pooled socket task of one session reads, built once.
struct Shared {
    /// The pool's settings.
    pool: Pool,
    /// Where pooled sockets are opened (`pool=1&reuse=1`).
    url: Url,
    /// How they are dialled.
    dialer: connect::Dialer,
    /// Idle and opening sockets.
    counts: Counts,
}

impl Pool {
    /// Starts the pool; it stops opening and waiting when `stop` fires (the
    /// session ended) — streams already assigned go on.
    pub fn start(self, stop: CancellationToken) {
        let streams = self.streams.clone();
        let shared = Arc::new(Shared {
            url: connect::pool_url(&self.server, &self.session),
            dialer: connect::Dialer::new(&self.config),
            counts: Counts::new(self.config.pool.div_ceil(2)),
            pool: self,
        });
        streams.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = shared.refill(&stop) => {}
            }
        });
    }
}

impl Shared {
    /// Tops the pool up to `N` whenever fewer than half of `N` are idle or
    /// being opened.
    async fn refill(self: &Arc<Self>, stop: &CancellationToken) {
        let counts = &self.counts;
        loop {
            if counts.is_low() {
                while counts.available() < self.pool.config.pool {
                    counts.opening.fetch_add(1, Ordering::Relaxed);
                    let (shared, stop) = (self.clone(), stop.clone());
                    self.pool.streams.spawn(async move { shared.socket(&stop).await });
                }
            }
            counts.low.notified().await;
        }
    }

    /// One pooled socket: open it, then serve one assigned stream after
    /// another until the socket ends or the session does.
    async fn socket(&self, stop: &CancellationToken) {
        let (counts, config) = (&self.counts, &self.pool.config);
        let opened = tokio::select! {
            () = stop.cancelled() => None,
            opened = self.open() => opened,
        };
        let Some(mut socket) = opened else {
            counts.drop_one(&counts.opening);
            return;
        };
        // Idle before no longer opening: the refiller never sees it missing.
        counts.idle.fetch_add(1, Ordering::Relaxed);
        counts.drop_one(&counts.opening);
        loop {
            let assigned = tokio::select! {
                () = stop.cancelled() => None,
                assigned = wait_for_assign(&mut socket) => assigned,
            };
            counts.drop_one(&counts.idle);
            let Some((stream, service)) = assigned else { return };
            let Some(target) = config.target(&service) else {
                tracing::warn!(%stream, %service, "server assigned a stream for an unknown service");
                return;
            };
            let (timeout, refusals) = (config.connect_timeout, &self.pool.refusals);
            if !stream::serve_assigned(&mut socket, target, &stream, &service, timeout, refusals).await
                || stop.is_cancelled()
            {
                return;
            }
            counts.idle.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Opens one pooled socket; `None` (after [`RETRY_DELAY`]) if it could not.
    async fn open(&self) -> Option<DataSocket> {
        match self.dialer.open_data(&self.url, self.pool.config.max_data_frame_bytes).await {
            Ok(socket) => return Some(socket),
            Err(e) if e.is_unauthorized() => {
                tracing::error!(error = %e, "pooled data socket refused: check the token");
            }
            Err(e) => tracing::debug!(error = %e, "pooled data socket not opened"),
        }
        tokio::time::sleep(RETRY_DELAY).await;
        None
    }
}

/// Waits for the `assign` that gives this socket a visitor; `None` if the
/// socket ended or broke the protocol first.
async fn wait_for_assign(socket: &mut DataSocket) -> Option<(String, String)> {
    let text = socket.recv_text().await?;
    let assigned = match serde_json::from_str::<ServerMessage>(&text) {
        Ok(ServerMessage::Assign(a)) => Some((a.stream.to_owned(), a.service.to_owned())),
        _ => None,
    };
    if assigned.is_none() {
        tracing::warn!(message = %format!("{text:.200}"), "expected assign on a pooled socket");
    }
    assigned
}
