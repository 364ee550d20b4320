//! Control handshakes per source IP per minute: a device that reconnects in
//! a tight loop (or a stranger guessing tokens) gets 429 while everyone
//! else keeps connecting. Devices behind one NAT share an address, so the
//! default is generous.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Per-IP token bucket; `None` inside when the limit is off (0).
pub struct HandshakeLimiter(Option<DefaultKeyedRateLimiter<IpAddr>>);

impl HandshakeLimiter {
    /// `per_minute` handshakes per IP (burst of the same size); 0 = no limit.
    pub fn new(per_minute: u32) -> Self {
        Self(NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))))
    }

    /// May `ip` make another control handshake now?
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.0.as_ref().is_none_or(|limiter| limiter.check_key(&ip).is_ok())
    }

    /// Forgets addresses whose bucket is full again (call periodically, so
    /// the table does not grow with every address ever seen).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.0 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
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
}
