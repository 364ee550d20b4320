//! Reconnect delays: exponential backoff with full jitter, so ten thousand
//! devices dropped at once by a server restart come back spread out instead
//! of in one second. The agent and terrierd's built-in demo device both
//! wait this way.

use std::time::Duration;

use rand::Rng;

/// How long a connection must stay up after the server's welcome before
/// the backoff starts over: long enough that a server accepting and then
/// dropping devices in a loop still spaces them out, short enough that a
/// device up for a few seconds comes back at once after a server restart.
pub const STABLE_AFTER: Duration = Duration::from_secs(5);

/// Backoff state of one agent.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Ceiling of the first delay.
    min: Duration,
    /// Ceiling of every delay.
    max: Duration,
    /// Failures since the last stable connection.
    attempt: u32,
}

impl Backoff {
    /// Delays start below `min` and their ceiling doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), attempt: 0 }
    }

    /// The ceiling of the next delay: `min * 2^attempt`, at most `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The next delay: uniformly random in `[0, ceiling]` ("full jitter").
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// A connection stayed up long enough (see [`STABLE_AFTER`]): start over from `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(60));
        }
        assert_eq!(&ceilings[..4], &[500, 1000, 2000, 4000]);
        assert_eq!(*ceilings.last().unwrap(), 60_000);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(500));
    }

    #[test]
    fn delays_are_spread_not_equal() {
        let mut delays = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
            delays.insert(b.next_delay().as_millis());
        }
        assert!(delays.len() > 40, "full jitter spreads delays: {}", delays.len());
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        b.attempt = u32::MAX;
        assert_eq!(b.ceiling(), Duration::from_secs(60));
        let _ = b.next_delay();
    }
}
