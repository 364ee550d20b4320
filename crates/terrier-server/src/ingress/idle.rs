//! When a visitor's HTTP connection counts as idle: no request in flight
//! (an answer still streaming counts as in flight) for
//! `limits.visitor_idle_timeout`; and when it counts as stalled: an answer
//! handed a part the visitor has not come back for in
//! `limits.answer_write_timeout` (it stopped reading, or an HTTP/2 client
//! gives the stream no window). Both are measured by requests and answer
//! parts rather than socket bytes, so HTTP/2 pings, which keep a dead peer
//! from lingering, keep neither an idle nor a stalled one open, and an
//! answer the device is slow to send is neither. The times are kept by the
//! stamp relayed TCP streams use ([`terrier_transport::idle`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

/// Requests in flight on one connection, and when the last one ended;
/// answer parts not yet taken, and when the last part was handed over.
#[derive(Debug)]
pub struct Activity {
    /// When the last request ended (or the connection was accepted).
    stamp: terrier_transport::idle::Activity,
    /// Requests whose answers have not ended.
    open: AtomicUsize,
    /// Woken when a request ends, so the idle wait starts again.
    ended: Notify,
    /// Answers that handed hyper a part it has not come back for.
    unread: AtomicUsize,
    /// When an answer last handed a part over.
    handed: terrier_transport::idle::Activity,
}

impl Activity {
    /// A connection accepted now, with nothing in flight.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            stamp: Default::default(),
            open: AtomicUsize::new(0),
            ended: Notify::new(),
            unread: AtomicUsize::new(0),
            handed: Default::default(),
        })
    }

    /// A request started; it ends when the returned guard drops (the
    /// guard rides in the answer's body, so streaming answers count).
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.open.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`.
    pub async fn until_idle(&self, timeout: Duration) {
        loop {
            if self.open.load(Ordering::Relaxed) > 0 {
                self.ended.notified().await;
                continue;
            }
            self.stamp.idle_for(timeout).await;
            // A request that started during the wait and is still in flight.
            if self.open.load(Ordering::Relaxed) == 0 {
                return;
            }
        }
    }

    /// Resolves once an answer has waited `timeout` for its visitor to take
    /// a part it was handed, with no part handed over since (noticed within
    /// twice `timeout`).
    pub async fn until_answer_stalled(&self, timeout: Duration) {
        loop {
            if self.unread.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(timeout).await;
                continue;
            }
            self.handed.idle_for(timeout).await;
            if self.unread.load(Ordering::Relaxed) > 0 {
                return;
            }
        }
    }
}

/// One request in flight; see [`Activity::start`].
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.stamp.touch();
        activity.open.fetch_sub(1, Ordering::Relaxed);
        activity.ended.notify_one();
    }
}

/// An answer's body that holds its request's [`InFlight`] until it ends,
/// and counts a part it handed over as unread until hyper comes back.
pub struct Tracked<B> {
    /// The answer's body.
    inner: B,
    /// The connection's activity.
    activity: Arc<Activity>,
    /// Dropped when the body is done (or dropped unfinished).
    in_flight: Option<InFlight>,
    /// A part was handed over and hyper has not come back for the next.
    unread: bool,
}

impl<B> Tracked<B> {
    /// `inner`, counted in flight until it ends.
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self { inner, activity: in_flight.0.clone(), in_flight: Some(in_flight), unread: false }
    }

    /// hyper came back for more: the part handed before was taken.
    fn taken(&mut self) {
        if std::mem::take(&mut self.unread) {
            self.activity.unread.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.taken();
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.taken();
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) if frame.is_data() => {
                self.unread = true;
                self.activity.unread.fetch_add(1, Ordering::Relaxed);
                self.activity.handed.touch();
            }
            Poll::Ready(None | Some(Err(_))) => self.in_flight = None,
            _ => {}
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
    use tokio::time::Instant;

    /// When `until_idle` resolves, from now, given up to `within`.
    async fn idle_after(activity: &Activity, timeout: Duration, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        tokio::time::timeout(within, activity.until_idle(timeout)).await.ok().map(|()| start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_answer() {
        let activity = Activity::new();
        let timeout = Duration::from_secs(5);
        assert_eq!(idle_after(&activity, timeout, Duration::from_secs(60)).await, Some(timeout));
        let request = activity.start();
        assert_eq!(idle_after(&activity, timeout, Duration::from_secs(60)).await, None, "an answer in flight");
        drop(request);
        assert_eq!(idle_after(&activity, timeout, Duration::from_secs(60)).await, Some(timeout));
    }
}
