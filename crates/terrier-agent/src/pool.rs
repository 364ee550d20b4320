//! Pooled data sockets (`--pool N`): idle, authenticated data sockets opened
//! ahead of visitors, so a visitor does not wait for a WebSocket handshake.
//! The server gives one a visitor by sending `assign` as its first frame; the
//! slot that owned it then opens a fresh one, so the pool refills itself.

use std::time::Duration;

use terrier_proto::messages::ServerMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::connect::{self, DataSocket};
use crate::stream::{self, Refusal};
use crate::AgentConfig;

/// Wait before a slot retries after its socket could not be opened.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// What the pool slots of one session share.
#[derive(Clone)]
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

impl Pool {
    /// Starts `config.pool` slots; they stop when `stop` fires (the session
    /// ended) — streams already assigned go on.
    pub fn start(self, stop: CancellationToken) {
        for _ in 0..self.config.pool {
            let (pool, stop) = (self.clone(), stop.clone());
            self.streams.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = pool.slot() => {}
                }
            });
        }
    }

    /// One slot: open an idle socket, wait for its `assign`, hand it to a
    /// stream task, repeat.
    async fn slot(&self) {
        let url = connect::pool_url(&self.server, &self.session);
        let dialer = connect::Dialer::new(&self.config);
        loop {
            let mut socket = match dialer.open_data(&url, self.config.max_data_frame_bytes).await {
                Ok(socket) => socket,
                Err(e) if e.is_unauthorized() => {
                    tracing::error!(error = %e, "pooled data socket refused: check the token");
                    tokio::time::sleep(RETRY_DELAY).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "pooled data socket not opened");
                    tokio::time::sleep(RETRY_DELAY).await;
                    continue;
                }
            };
            let Some((stream, service)) = wait_for_assign(&mut socket).await else { continue };
            let Some(target) = self.config.target(&service).cloned() else {
                tracing::warn!(%stream, %service, "server assigned a stream for an unknown service");
                continue;
            };
            let (refusals, timeout) = (self.refusals.clone(), self.config.connect_timeout);
            self.streams.spawn(async move {
                stream::relay_to_local(socket, &target, &stream, &service, timeout, refusals).await;
            });
            // Let the stream dial its local service before this slot dials
            // the server for a fresh socket: the visitor is waiting, the
            // refill is not urgent (on a current-thread runtime the refill
            // went first and added its handshake to every new connection).
            tokio::task::yield_now().await;
        }
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
