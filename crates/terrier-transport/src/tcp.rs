//! Socket options every terrier TCP connection gets: no Nagle delay (frames
//! are small and latency-bound), and TCP keepalive so a peer that vanished
//! without a FIN (power loss, a NAT that forgot the mapping) is noticed by
//! the kernel instead of holding the connection and its relay forever.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Default idle time before keepalive probes start.
pub const KEEPALIVE: Duration = Duration::from_secs(30);

/// Sets TCP_NODELAY and keepalive (probes after `idle`, then every
/// `idle / 3`, three of them). Failures are ignored: both are optimisations.
pub fn tune(stream: &TcpStream, idle: Duration) {
    let _ = stream.set_nodelay(true);
    let interval = (idle / 3).max(Duration::from_secs(1));
    let keepalive = TcpKeepalive::new().with_time(idle).with_interval(interval);
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos", target_os = "windows"))]
    let keepalive = keepalive.with_retries(3);
    let _ = SockRef::from(stream).set_tcp_keepalive(&keepalive);
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
}
