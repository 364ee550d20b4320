//! Ending a relayed stream that no longer moves bytes. [`Activity::track`]
//! wraps one end of the relay and stamps the time whenever a byte goes
//! through it; [`until_idle`] runs the relay until it ends or that stamp
//! is older than a timeout. Wrapping the visitor's end is enough: reads
//! from it carry bytes in, writes to it carry bytes out, so one wrapper
//! sees both directions.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When bytes last moved through the IO it tracks; clones share the stamp.
#[derive(Debug, Clone)]
pub struct Activity {
    /// The shared stamp.
    stamp: Arc<Stamp>,
}

/// The last time bytes moved, as an atomic offset from a fixed instant.
#[derive(Debug)]
struct Stamp {
    /// What `last_nanos` counts from.
    origin: Instant,
    /// Nanoseconds from `origin` to the last byte moved.
    last_nanos: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// A stamp that starts as if a byte moved now, so a stream that never
    /// moves one is idle from its start.
    pub fn new() -> Self {
        Self { stamp: Arc::new(Stamp { origin: Instant::now(), last_nanos: AtomicU64::new(0) }) }
    }

    /// Records that bytes moved now.
    pub fn touch(&self) {
        let nanos = u64::try_from(self.stamp.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // A plain store: two ends stamping at once may leave the earlier of
        // two nearly equal times, which no timeout can tell apart.
        self.stamp.last_nanos.store(nanos, Ordering::Relaxed);
    }

    /// When bytes last moved (or the stamp was made).
    pub fn last(&self) -> Instant {
        self.stamp.origin + Duration::from_nanos(self.stamp.last_nanos.load(Ordering::Relaxed))
    }

    /// `io`, stamping this activity whenever a read or write moves bytes.
    pub fn track<T>(&self, io: T) -> Tracked<T> {
        Tracked { inner: io, activity: self.clone() }
    }

    /// Resolves once no bytes have moved for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            // A timeout too long to add up never ends.
            let Some(deadline) = self.last().checked_add(timeout) else {
                return std::future::pending().await;
            };
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream ended because no bytes moved either way for this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no bytes either way for {0:?}")]
pub struct IdleTimeout(pub Duration);

/// Runs `work` (a relay through IO tracked by `activity`) to its end, or
/// until no bytes have moved for `timeout`: then `work` is dropped, which
/// closes the connections it owns.
pub async fn until_idle<F: Future>(activity: &Activity, timeout: Duration, work: F) -> Result<F::Output, IdleTimeout> {
    tokio::select! {
        biased;
        out = work => Ok(out),
        () = activity.idle_for(timeout) => Err(IdleTimeout(timeout)),
    }
}

/// IO that stamps an [`Activity`] whenever bytes go through it.
#[derive(Debug)]
pub struct Tracked<T> {
    /// The wrapped stream.
    inner: T,
    /// Stamped on every read or write that moves bytes.
    activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_millis(300);

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_moves_nothing_ends_after_the_timeout() {
        let activity = Activity::new();
        let start = Instant::now();
        let ended = until_idle(&activity, TIMEOUT, std::future::pending::<()>()).await;
        assert_eq!(ended, Err(IdleTimeout(TIMEOUT)));
        assert_eq!(start.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_either_way_keep_it_open_and_it_ends_a_timeout_after_the_last() {
        let (near, mut far) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut tracked = activity.track(near);
        let work = async {
            let mut byte = [0u8; 1];
            // Ten reads and ten writes a third of the timeout apart: 2 s in all.
            for _ in 0..10 {
                tokio::time::sleep(TIMEOUT / 3).await;
                far.write_all(b"x").await.unwrap();
                tracked.read_exact(&mut byte).await.unwrap();
                tokio::time::sleep(TIMEOUT / 3).await;
                tracked.write_all(b"y").await.unwrap();
                far.read_exact(&mut byte).await.unwrap();
            }
            std::future::pending::<()>().await;
        };
        let start = Instant::now();
        assert!(until_idle(&activity, TIMEOUT, work).await.is_err());
        assert_eq!(start.elapsed(), 20 * (TIMEOUT / 3) + TIMEOUT, "ended one timeout after the last byte");
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_finishes_first_returns_its_output() {
        let activity = Activity::new();
        let ended = until_idle(&activity, TIMEOUT, async { 7 }).await;
        assert_eq!(ended, Ok(7));
    }
}
