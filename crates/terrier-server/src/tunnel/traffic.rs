//! What one online device moved: bytes each way, streams open and total
//! (its HTTP requests are logged in [`super::requests`]).
//!
//! Every visitor stream is wrapped in [`Metered`] (the visitor's connection
//! for a raw relay, the device's data socket for HTTP), so counts grow while
//! a transfer runs (not only when it ends), and a stream counts as open
//! exactly as long as the wrapper lives. Node-wide totals for
//! `/metrics` are updated by the same wrapper ([`crate::metrics`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::{Metrics, StreamKind};

/// Live counters of one session.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes from visitors into the device.
    pub bytes_in: AtomicU64,
    /// Bytes from the device out to visitors.
    pub bytes_out: AtomicU64,
    /// Streams (data sockets with a visitor) open now.
    pub streams_open: AtomicU64,
    /// Streams opened since the session started.
    pub streams_total: AtomicU64,
}

/// One end of a visitor stream (see [`Side`]): counts bytes into the
/// session's [`Traffic`] and the node's [`Metrics`], and holds the stream
/// "open" until dropped.
pub struct Metered<T> {
    /// The wrapped end of the stream (which one: `side`).
    inner: T,
    /// Where the counts go.
    traffic: Arc<Traffic>,
    /// Node-wide counters.
    metrics: Arc<Metrics>,
    /// HTTP or TCP, for the metric labels.
    kind: StreamKind,
    /// Which end of the stream `inner` is: reading from the visitor side
    /// moves bytes into the device, reading from the device side out of it.
    side: Side,
}

/// Which end of a relayed stream a [`Metered`] wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The visitor's connection (a public TCP port, TLS passthrough).
    Visitor,
    /// The device's data socket as a byte stream (the HTTP client's upstream).
    Device,
}

impl<T> Metered<T> {
    /// Wraps `inner`; the stream is open from now until the wrapper drops.
    pub fn new(inner: T, traffic: Arc<Traffic>, metrics: Arc<Metrics>, kind: StreamKind) -> Self {
        Self::on_side(inner, Side::Visitor, traffic, metrics, kind)
    }

    /// Wraps `inner`, which is the `side` end of the stream.
    pub fn on_side(inner: T, side: Side, traffic: Arc<Traffic>, metrics: Arc<Metrics>, kind: StreamKind) -> Self {
        traffic.streams_open.fetch_add(1, Ordering::Relaxed);
        traffic.streams_total.fetch_add(1, Ordering::Relaxed);
        metrics.stream_opened(kind);
        Self { inner, traffic, metrics, kind, side }
    }

    /// Counts `n` bytes on their way into the device.
    fn count_in(&self, n: u64) {
        self.traffic.bytes_in.fetch_add(n, Ordering::Relaxed);
        self.metrics.bytes_to_device(n);
    }

    /// Counts `n` bytes on their way out of the device.
    fn count_out(&self, n: u64) {
        self.traffic.bytes_out.fetch_add(n, Ordering::Relaxed);
        self.metrics.bytes_from_device(n);
    }
}

impl<T> Drop for Metered<T> {
    fn drop(&mut self) {
        self.traffic.streams_open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.stream_closed(self.kind);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            match this.side {
                Side::Visitor => this.count_in(n),
                Side::Device => this.count_out(n),
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            match this.side {
                Side::Visitor => this.count_out(*n as u64),
                Side::Device => this.count_in(*n as u64),
            }
        }
        polled
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metered_counts_both_directions_and_open_streams() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(64);
        let traffic = Arc::new(Traffic::default());
        let metrics = Arc::new(Metrics::default());
        let mut m = Metered::new(a, traffic.clone(), metrics, StreamKind::Tcp);
        assert_eq!(traffic.streams_open.load(Ordering::Relaxed), 1);
        b.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        m.read_exact(&mut buf).await.unwrap();
        m.write_all(b"hi").await.unwrap();
        assert_eq!(traffic.bytes_in.load(Ordering::Relaxed), 5);
        assert_eq!(traffic.bytes_out.load(Ordering::Relaxed), 2);
        drop(m);
        assert_eq!(traffic.streams_open.load(Ordering::Relaxed), 0);
        assert_eq!(traffic.streams_total.load(Ordering::Relaxed), 1);
    }
}
