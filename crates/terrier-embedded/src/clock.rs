//! Time, as the firmware provides it: a millisecond counter and a sleep.
//! Heartbeats, backoff, handshake and idle timeouts all use it, so host tests
//! run the same code on tokio's clock.

/// A monotonic millisecond clock that can sleep (embassy: `Instant::now()`
/// and `Timer::after_millis`).
pub trait Clock {
    /// Milliseconds since an arbitrary fixed point (boot); never goes back.
    fn now_ms(&self) -> u64;
    /// Completes after `ms` milliseconds. Dropping it early must be harmless.
    async fn sleep_ms(&self, ms: u64);
}

impl<T: Clock> Clock for &T {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
    async fn sleep_ms(&self, ms: u64) {
        (**self).sleep_ms(ms).await
    }
}
