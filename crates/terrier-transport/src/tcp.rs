//! Socket options every terrier TCP connection gets: no Nagle delay (frames
//! are small and latency-bound), and TCP keepalive so a peer that vanished
//! without a FIN (power loss, a NAT that forgot the mapping) is noticed by
//! the kernel instead of holding the connection and its relay forever.
//!
//! On Linux a socket accepted from a listener starts with the listener's
//! options, so a server tunes its listeners once ([`ListenerTuning`])
//! instead of making five `setsockopt` calls for every visitor.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};

/// Whether accepted sockets inherit TCP_NODELAY and the keepalive settings
/// from their listener (Linux copies the listener's socket to make them).
const ACCEPTED_INHERIT_OPTIONS: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Default idle time before keepalive probes start.
pub const KEEPALIVE: Duration = Duration::from_secs(30);

/// Sets TCP_NODELAY and keepalive (probes after `idle`, then every
/// `idle / 3`, three of them). Failures are ignored: both are optimisations.
pub fn tune(stream: &TcpStream, idle: Duration) {
    tune_socket(SockRef::from(stream), idle);
}

/// Sets TCP_NODELAY and nothing else: for a connection to a loopback
/// address, whose peer cannot vanish without its kernel resetting the
/// connection, so keepalive probes would only cost system calls.
pub fn tune_loopback(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// [`tune`] for any TCP socket: a connection, or a listener whose accepted
/// sockets inherit the options.
fn tune_socket(sock: SockRef<'_>, idle: Duration) {
    let _ = sock.set_tcp_nodelay(true);
    let interval = (idle / 3).max(Duration::from_secs(1));
    let keepalive = TcpKeepalive::new().with_time(idle).with_interval(interval);
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos", target_os = "windows"))]
    let keepalive = keepalive.with_retries(3);
    let _ = sock.set_tcp_keepalive(&keepalive);
}

/// Keeps a listener's options in step with a keepalive idle time that a
/// configuration reload may change, so that the sockets it accepts need no
/// tuning of their own where they inherit it.
#[derive(Debug, Default)]
pub struct ListenerTuning {
    /// The idle time the listener was last tuned with.
    applied: Option<Duration>,
}

impl ListenerTuning {
    /// Call for every accepted `stream`: tunes it (with `idle`) unless it
    /// inherited that from `listener`, and retunes the listener when `idle`
    /// changed.
    pub fn accepted(&mut self, listener: &TcpListener, stream: &TcpStream, idle: Duration) {
        if ACCEPTED_INHERIT_OPTIONS && self.applied == Some(idle) {
            return;
        }
        tune(stream, idle);
        if ACCEPTED_INHERIT_OPTIONS {
            tune_socket(SockRef::from(listener), idle);
            self.applied = Some(idle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tuned_sockets_have_nodelay_and_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        tune(&stream, Duration::from_secs(12));
        let sock = SockRef::from(&stream);
        assert!(stream.nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        {
            assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(12));
            assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(4));
            assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
        }
    }

    /// Accepts one connection and returns it with whatever tuning applied.
    async fn accept_one(listener: &TcpListener, tuning: &mut ListenerTuning, idle: Duration) -> TcpStream {
        let addr = listener.local_addr().unwrap();
        let (_client, (accepted, _)) =
            tokio::join!(TcpStream::connect(addr), async { listener.accept().await.unwrap() });
        tuning.accepted(listener, &accepted, idle);
        accepted
    }

    #[tokio::test]
    async fn accepted_sockets_are_tuned_also_when_inherited_and_after_a_change() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut tuning = ListenerTuning::default();
        for idle in [12, 12, 12, 30, 30] {
            let accepted = accept_one(&listener, &mut tuning, Duration::from_secs(idle)).await;
            let sock = SockRef::from(&accepted);
            assert!(accepted.nodelay().unwrap());
            assert!(sock.keepalive().unwrap());
            #[cfg(target_os = "linux")]
            {
                assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(idle));
                assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(idle / 3));
                assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
            }
        }
    }
}
