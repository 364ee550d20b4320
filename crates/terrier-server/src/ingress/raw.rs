//! Raw visitor connections (a public TCP port, TLS passthrough): checked
//! against the device's access rules and the visitor's share of its
//! streams, then relayed byte for byte to one of its services over a
//! tunnel stream, until both ends are done or no bytes moved for
//! `limits.tcp_idle_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;

use terrier_transport::idle::{until_idle, Activity};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::access::AccessRules;
use crate::live::Live;
use crate::metrics::{Metrics, StreamKind};
use crate::tunnel::session::Session;
use crate::tunnel::traffic::Metered;

/// What relaying a raw visitor needs; clones share it.
#[derive(Clone)]
pub struct Relays {
    /// The devices' access rules.
    pub access: Arc<AccessRules>,
    /// The limits in force.
    pub live: Arc<Live>,
    /// Where relayed bytes are counted.
    pub metrics: Arc<Metrics>,
}

impl Relays {
    /// Relays `visitor` (from `remote`) to `session`'s `service` until both
    /// ends are done or the stream sits idle past `limits.tcp_idle_timeout`
    /// (callers run it in a task the node's hard stop cuts); `via` names the
    /// way in for logs ("TCP port", "TLS passthrough").
    pub async fn relay<T>(&self, session: &Session, service: &str, visitor: T, remote: SocketAddr, via: &'static str)
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let device = session.name.as_str();
        if !self.access.allows_address(device, remote.ip()) {
            return tracing::info!(device, service, %remote, via, "visitor denied by access rules");
        }
        let limits = self.live.limits();
        // Held until the relay ends: the stream counts against this address's share.
        let _slot = match session.admit(remote.ip(), &limits) {
            Ok(slot) => slot,
            Err(e) => return tracing::info!(device, service, %remote, via, error = %e, "visitor stream not opened"),
        };
        let socket = match session.open_stream(service).await {
            Ok(socket) => socket,
            Err(e) => return tracing::info!(device, service, %remote, via, error = %e, "visitor stream not opened"),
        };
        let activity = Activity::new();
        let visitor =
            activity.track(Metered::new(visitor, session.traffic.clone(), self.metrics.clone(), StreamKind::Tcp));
        // The task running this is cut at the hard stop (Lifecycle::spawn_until_hard_stop).
        match until_idle(&activity, limits.tcp_idle_timeout, session.relay(socket, visitor)).await {
            Ok(Ok(stats)) => tracing::debug!(
                device, service, %remote, via, up = stats.to_socket, down = stats.from_socket, "visitor stream closed"
            ),
            Ok(Err(e)) => tracing::debug!(device, service, %remote, via, error = %e, "visitor stream aborted"),
            Err(idle) => tracing::info!(
                device, service, %remote, via, error = %idle, "visitor stream closed: idle past limits.tcp_idle_timeout"
            ),
        }
    }
}
