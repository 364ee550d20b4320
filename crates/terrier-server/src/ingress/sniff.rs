//! Telling HTTP/2 with prior knowledge from HTTP/1 on a fresh connection,
//! under a deadline.
//!
//! hyper-util's automatic detection waits for up to 24 bytes with no timer,
//! so a client that connects and sends nothing (or half the HTTP/2 preface)
//! would hold a connection forever — slowloris before the header timeout even
//! starts. Here the first bytes are read under `header_read_timeout`; the
//! bytes read are then served again in front of the stream
//! ([`terrier_transport::prefixed::Prefixed`]).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The connection preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which HTTP the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
}

/// Reads until the bytes can only be HTTP/1 or are the whole HTTP/2
/// preface. Fails on timeout or when the client closes first.
pub async fn sniff<S: AsyncRead + Unpin>(stream: &mut S, timeout: Duration) -> io::Result<(Protocol, Vec<u8>)> {
    let mut seen = Vec::with_capacity(H2_PREFACE.len());
    let read = async {
        loop {
            let mut buf = [0u8; 24];
            let want = H2_PREFACE.len() - seen.len();
            let n = stream.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a request"));
            }
            seen.extend_from_slice(&buf[..n]);
            if !H2_PREFACE.starts_with(&seen) {
                return Ok(Protocol::Http1);
            }
            if seen.len() == H2_PREFACE.len() {
                return Ok(Protocol::Http2);
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(protocol)) => Ok((protocol, seen)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no request within the header read timeout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn http1_is_known_from_the_first_mismatch() {
        for request in [&b"GET / HTTP/1.1\r\n"[..], b"POST /x", b"PUT", b"PRI / HTTP/1.1"] {
            let (mut client, mut server) = tokio::io::duplex(64);
            client.write_all(request).await.unwrap();
            let (protocol, seen) = sniff(&mut server, Duration::from_secs(1)).await.unwrap();
            assert_eq!(protocol, Protocol::Http1, "{request:?}");
            assert!(request.starts_with(&seen));
        }
    }

    #[tokio::test]
    async fn http2_preface_byte_by_byte() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let feed = tokio::spawn(async move {
            for b in H2_PREFACE {
                client.write_all(&[*b]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let (protocol, seen) = sniff(&mut server, Duration::from_secs(1)).await.unwrap();
        assert_eq!((protocol, seen.as_slice()), (Protocol::Http2, H2_PREFACE));
        drop(feed.await);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_and_half_prefaces_time_out() {
        let (_client, mut server) = tokio::io::duplex(64);
        let err = sniff(&mut server, Duration::from_millis(500)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"PRI * HT").await.unwrap();
        assert_eq!(sniff(&mut server, Duration::from_millis(500)).await.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
