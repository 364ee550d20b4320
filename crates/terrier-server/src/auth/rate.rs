//! Control handshakes per source IP per minute: a device that reconnects in
//! a tight loop (or a stranger guessing tokens) gets 429 while everyone
//! else keeps connecting. Devices behind one NAT share an address, so the
//! default is generous.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};

use arc_swap::ArcSwapOption;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Per-IP token bucket; empty inside when the limit is off (0).
pub struct HandshakeLimiter {
    /// The buckets, replaced whole when the rate changes on reload.
    buckets: ArcSwapOption<DefaultKeyedRateLimiter<IpAddr>>,
    /// The rate `buckets` were made for.
    per_minute: AtomicU32,
}

impl HandshakeLimiter {
    /// `per_minute` handshakes per IP (burst of the same size); 0 = no limit.
    pub fn new(per_minute: u32) -> Self {
        Self { buckets: ArcSwapOption::new(buckets(per_minute)), per_minute: AtomicU32::new(per_minute) }
    }

    /// Changes the rate (on `SIGHUP`). Every address starts again with a
    /// full bucket of the new size; an unchanged rate keeps the buckets.
    pub fn set_per_minute(&self, per_minute: u32) {
        if self.per_minute.swap(per_minute, Ordering::Relaxed) != per_minute {
            self.buckets.store(buckets(per_minute));
        }
    }

    /// May `ip` make another control handshake now?
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.buckets.load().as_ref().is_none_or(|limiter| limiter.check_key(&ip).is_ok())
    }

    /// Forgets addresses whose bucket is full again (call periodically, so
    /// the table does not grow with every address ever seen).
    pub fn forget_idle(&self) {
        if let Some(limiter) = self.buckets.load().as_ref() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

fn buckets(per_minute: u32) -> Option<std::sync::Arc<DefaultKeyedRateLimiter<IpAddr>>> {
    NonZeroU32::new(per_minute).map(|n| std::sync::Arc::new(RateLimiter::keyed(Quota::per_minute(n))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_address_separately() {
        let limiter = HandshakeLimiter::new(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!((0..3).all(|_| limiter.allow(a)));
        assert!(!limiter.allow(a));
        assert!(limiter.allow(b));
        assert!((0..1000).all(|_| HandshakeLimiter::new(0).allow(a)));
    }

    #[test]
    fn a_new_rate_applies_at_once_and_zero_turns_it_off() {
        let limiter = HandshakeLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(limiter.allow(a) && limiter.allow(a) && !limiter.allow(a));
        limiter.set_per_minute(2);
        assert!(!limiter.allow(a), "the same rate keeps the buckets");
        limiter.set_per_minute(5);
        assert_eq!((0..10).filter(|_| limiter.allow(a)).count(), 5);
        limiter.set_per_minute(0);
        assert!((0..100).all(|_| limiter.allow(a)));
    }
}
