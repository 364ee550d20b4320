//! Reconnect delays: exponential backoff with full jitter (`docs/PROTOCOL.md`
//! §5), so thousands of devices coming back after a server restart spread out.

use rand_core::RngCore;

use crate::config::Timing;

/// Failures since the last stable connection, and the delay they earn.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// A connection lived long enough: start again from the base delay.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay before the next attempt: uniform in `[0, min(max, base × 2^n)]`.
    pub(crate) fn next_delay_ms(&mut self, timing: &Timing, rng: &mut impl RngCore) -> u64 {
        let ceiling = u64::from(timing.backoff_base_ms)
            .saturating_mul(1u64 << self.failures.min(32))
            .min(u64::from(timing.backoff_max_ms));
        self.failures = self.failures.saturating_add(1);
        rng.next_u64() % (ceiling + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u64);
    impl RngCore for Counter {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 11
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            rand_core::impls::fill_bytes_via_next(self, dest)
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    #[test]
    fn ceilings_double_up_to_the_max_and_reset() {
        let timing = Timing::default();
        let mut rng = Counter(7);
        let mut b = Backoff::default();
        for n in 0..40u32 {
            let ceiling = (500u64 << n.min(20)).min(60_000);
            for _ in 0..50 {
                let mut probe = Backoff { failures: n };
                assert!(probe.next_delay_ms(&timing, &mut rng) <= ceiling);
            }
            b.next_delay_ms(&timing, &mut rng);
        }
        assert_eq!(b.failures, 40);
        b.reset();
        assert!(b.next_delay_ms(&timing, &mut rng) <= 500);
    }
}
