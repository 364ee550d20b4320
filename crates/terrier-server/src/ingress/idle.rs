//! When a visitor's HTTP connection counts as idle: no request in flight
//! (an answer still streaming counts as in flight) for
//! `limits.visitor_idle_timeout`. Measured per request rather than per
//! byte, so HTTP/2 pings, which keep a dead peer from lingering, do not
//! keep an idle one open either.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// Requests in flight on one connection, and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    /// When the connection was accepted: the base of `last_ms`.
    born: Instant,
    /// Requests whose answers have not ended.
    open: AtomicUsize,
    /// When the last request ended, in ms after `born`.
    last_ms: AtomicU64,
    /// Woken when a request ends, so the idle timer starts again.
    ended: tokio::sync::Notify,
}

impl Activity {
    /// A connection accepted now, with nothing in flight.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            open: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            ended: tokio::sync::Notify::new(),
        })
    }

    /// A request started; it ends when the returned guard drops (the
    /// guard rides in the answer's body, so streaming answers count).
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.open.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// When the connection becomes idle for `timeout`, if nothing starts
    /// before: `None` while a request is in flight.
    pub fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.open.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(self.born + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + timeout)
    }

    /// Waits until a request ends (at once if one ended since the last wait).
    pub async fn request_ended(&self) {
        self.ended.notified().await;
    }
}

/// One request in flight; see [`Activity::start`].
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.last_ms.store(activity.born.elapsed().as_millis() as u64, Ordering::Relaxed);
        activity.open.fetch_sub(1, Ordering::Relaxed);
        activity.ended.notify_one();
    }
}

/// An answer's body that holds its request's [`InFlight`] until it ends.
pub struct Tracked<B> {
    /// The answer's body.
    inner: B,
    /// Dropped when the body is done (or dropped unfinished).
    in_flight: Option<InFlight>,
}

impl<B> Tracked<B> {
    /// `inner`, counted in flight until it ends.
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self { inner, in_flight: Some(in_flight) }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_answer() {
        let activity = Activity::new();
        let timeout = Duration::from_secs(5);
        assert_eq!(activity.idle_deadline(timeout), Some(Instant::now() + timeout));
        let request = activity.start();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(activity.idle_deadline(timeout), None, "an answer in flight is not idle");
        drop(request);
        assert_eq!(activity.idle_deadline(timeout), Some(Instant::now() + timeout));
    }
}
