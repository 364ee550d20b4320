//! The settings a `SIGHUP` can change while tunnels stay up: the `[limits]`
//! and the grace period. The hot paths read them here once per connection,
//! data socket or handshake (an atomic load, no lock, nothing held across an
//! await), so a reload applies to the next visitor or device and leaves the
//! ones already running as they are. [`crate::reload`] decides what goes in;
//! this module only holds it. (Visitor access rules swap the same way inside
//! [`crate::access::AccessRules`].)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{Limits, ServerConfig};

/// The live-changeable settings of a running node.
#[derive(Debug)]
pub struct Live {
    /// The limits in force for new connections and sessions.
    limits: ArcSwap<Limits>,
    /// The grace period in force for leases released from now on, in ms.
    grace_ms: AtomicU64,
}

impl Live {
    /// The settings of `config` as read at start.
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            limits: ArcSwap::from_pointee(config.limits.clone()),
            grace_ms: AtomicU64::new(millis(config.grace_period)),
        }
    }

    /// The limits in force now (a reload may have changed them since start).
    pub fn limits(&self) -> Arc<Limits> {
        self.limits.load_full()
    }

    /// The grace period in force now.
    pub fn grace_period(&self) -> Duration {
        Duration::from_millis(self.grace_ms.load(Ordering::Relaxed))
    }

    /// Puts `config`'s limits and grace period in force (already validated).
    pub fn apply(&self, config: &ServerConfig) {
        self.limits.store(Arc::new(config.limits.clone()));
        self.grace_ms.store(millis(config.grace_period), Ordering::Relaxed);
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_changes_what_later_reads_see() {
        let mut config = ServerConfig::default();
        let live = Live::new(&config);
        let before = live.limits();
        config.limits.max_header_bytes = 9000;
        config.grace_period = Duration::from_secs(7);
        live.apply(&config);
        assert_eq!(live.limits().max_header_bytes, 9000);
        assert_eq!(live.grace_period(), Duration::from_secs(7));
        assert_eq!(before.max_header_bytes, 65536, "a reader holding the old limits keeps them");
    }
}
