//! `terrierd --demo`: a built-in device next to the server, so a first run
//! shows a working tunnel with nothing else installed. It is a small device
//! of its own rather than the agent crate (which the server must not depend
//! on), and it is honest: it connects to this very server over its public
//! listener with the real protocol, announces one HTTP service and answers
//! it with a page.
//!
//! `dial` opens the control and data sockets, `session` serves one control
//! socket, `page` answers the visitors; this file keeps the device
//! connected, reconnecting like an agent (docs/PROTOCOL.md §5).

mod dial;
mod page;
mod session;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use terrier_transport::reconnect::Backoff;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Name of the demo device.
pub const DEMO_NAME: &str = "demo";

/// Ceiling of the first reconnect delay; it doubles with each failure.
const RECONNECT_BASE: Duration = Duration::from_millis(500);
/// Largest reconnect delay.
const RECONNECT_MAX: Duration = Duration::from_secs(60);
/// A session that lasted this long resets the reconnect delay.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Starts the demo device, connected to `server` (this server's listener)
/// until `shutdown`; its tasks go on `tasks`. Prints the device's public URL
/// each time it comes online.
pub fn start(server: SocketAddr, shutdown: CancellationToken, tasks: &TaskTracker) {
    let device = Device { server: dialable(server), shutdown: shutdown.clone(), streams: tasks.clone() };
    let span = tracing::info_span!("demo", device = DEMO_NAME);
    tasks.spawn(
        async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = device.keep_connected() => {}
            }
        }
        .instrument(span),
    );
}

/// What the demo device's tasks share.
struct Device {
    /// The server's listener, as the device dials it.
    server: SocketAddr,
    /// Stops the device and its streams.
    shutdown: CancellationToken,
    /// Where stream tasks are tracked (`main` waits for them).
    streams: TaskTracker,
}

impl Device {
    /// Connects, serves, and reconnects with backoff, forever.
    async fn keep_connected(&self) {
        let mut backoff = Backoff::new(RECONNECT_BASE, RECONNECT_MAX);
        loop {
            let started = Instant::now();
            let go_away = match session::run(self).await {
                Ok(ended) => {
                    tracing::info!(reason = %ended.reason, "demo device offline");
                    if started.elapsed() >= STABLE_AFTER {
                        backoff.reset();
                    }
                    ended.go_away
                }
                Err(e) if e.is_fatal() => {
                    return tracing::error!(error = %e, "demo device refused; it stays offline");
                }
                Err(e) if e.is_unauthorized() => {
                    tracing::error!(error = %e, "demo device refused: it has no device token (use --auth open)");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "demo device could not connect");
                    None
                }
            };
            let delay = backoff.next_delay();
            let delay = go_away.unwrap_or(delay);
            tracing::debug!(?delay, "demo device reconnecting");
            tokio::time::sleep(delay).await;
        }
    }
}

/// `listen` as a client can dial it: a wildcard address means this host.
fn dialable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_dialled_on_loopback() {
        let dial = |s: &str| dialable(s.parse().unwrap()).to_string();
        assert_eq!(dial("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(dial("[::]:8080"), "[::1]:8080");
        assert_eq!(dial("192.0.2.7:80"), "192.0.2.7:80");
    }
}
