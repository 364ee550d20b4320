//! Each visitor address's share of one device's streams, so that one
//! address holding many idle connections cannot use up
//! `limits.max_streams_per_device` for everyone else, and the device's
//! total itself, counted in the same place so that visitors arriving
//! together cannot all slip past it.
//!
//! [`Session::admit`](crate::tunnel::session::Session::admit) hands out a
//! [`VisitorSlot`] per visitor stream (a TCP or TLS-passthrough
//! connection, an HTTP request until its answer ends, an upgraded
//! connection); the slot counts against its address and the device until
//! dropped. The table keeps only addresses with a slot out, so its size is
//! bounded by the device's open streams, not by how many addresses ever
//! visited. A leaf: the session and the forwarding code both hold slots.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// Where a visitor's streams are counted: an IPv4 address, or the /64 an
/// IPv6 address is in (one host is usually given a whole /64 and may use
/// any address in it, so counting single addresses would not hold it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VisitorKey(IpAddr);

impl VisitorKey {
    /// The key `ip` is counted under; an IPv4-mapped IPv6 address (a
    /// dual-stack listener) counts as its IPv4 address.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !(u128::from(u64::MAX));
                Self(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

impl std::fmt::Display for VisitorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => v4.fmt(f),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Open streams per visitor key of one device, and in all.
#[derive(Debug, Default)]
pub struct Visitors {
    /// The counts, behind one lock.
    open: Arc<Mutex<Open>>,
}

/// What [`Visitors`] counts.
#[derive(Debug, Default)]
struct Open {
    /// Streams open per key; a key leaves when its count drops to zero.
    by_key: HashMap<VisitorKey, usize>,
    /// Streams open in all.
    total: usize,
}

/// Which limit refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The visitor's key has its share open.
    Visitor,
    /// The device has its total open.
    Device,
}

impl Visitors {
    /// A slot for one more stream from `ip`, unless its key already has
    /// `per_visitor` streams open or the device `total`.
    pub fn admit(&self, ip: IpAddr, per_visitor: usize, total: usize) -> Result<VisitorSlot, Full> {
        let key = VisitorKey::of(ip);
        let mut open = self.open.lock().expect("visitors lock");
        if open.total >= total {
            return Err(Full::Device);
        }
        let count = open.by_key.get(&key).copied().unwrap_or(0);
        if count >= per_visitor {
            return Err(Full::Visitor);
        }
        open.by_key.insert(key, count + 1);
        open.total += 1;
        Ok(VisitorSlot { open: self.open.clone(), key })
    }

    /// Streams open for `ip`'s key right now.
    #[cfg(test)]
    fn open_for(&self, ip: IpAddr) -> usize {
        self.open.lock().expect("visitors lock").by_key.get(&VisitorKey::of(ip)).copied().unwrap_or(0)
    }

    /// Keys with at least one stream open.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.open.lock().expect("visitors lock").by_key.len()
    }
}

/// One visitor stream counted against its address's share; the place is
/// given back when this is dropped. Owns what it needs (`Send + 'static`),
/// so it can move into the task that relays the stream.
#[derive(Debug)]
pub struct VisitorSlot {
    /// The table the stream is counted in.
    open: Arc<Mutex<Open>>,
    /// Whose stream it is.
    key: VisitorKey,
}

impl VisitorSlot {
    /// The key the stream is counted under (the address, or its /64).
    #[cfg(test)]
    pub fn key(&self) -> VisitorKey {
        self.key
    }
}

impl Drop for VisitorSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("visitors lock");
        open.total -= 1;
        if let Some(count) = open.by_key.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.by_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A slot within a share of `max`, the device total out of the way.
    fn share(visitors: &Visitors, ip: IpAddr, max: usize) -> Option<VisitorSlot> {
        visitors.admit(ip, max, usize::MAX).ok()
    }

    #[test]
    fn the_device_total_counts_every_address_together() {
        let visitors = Visitors::default();
        let a = visitors.admit(ip("192.0.2.1"), 2, 3).unwrap();
        let _b = visitors.admit(ip("192.0.2.2"), 2, 3).unwrap();
        let _c = visitors.admit(ip("192.0.2.3"), 2, 3).unwrap();
        assert_eq!(visitors.admit(ip("192.0.2.4"), 2, 3).unwrap_err(), Full::Device);
        drop(a);
        assert!(visitors.admit(ip("192.0.2.4"), 2, 3).is_ok(), "a place given back is free for anyone");
    }

    #[test]
    fn an_address_gets_at_most_max_and_others_are_unaffected() {
        let visitors = Visitors::default();
        let held: Vec<_> = (0..3).map(|_| share(&visitors, ip("192.0.2.1"), 3).expect("within the share")).collect();
        assert!(share(&visitors, ip("192.0.2.1"), 3).is_none(), "a fourth is refused");
        let other = share(&visitors, ip("192.0.2.2"), 3).expect("another address has its own share");
        assert_eq!(visitors.open_for(ip("192.0.2.1")), 3);
        drop(held);
        assert!(share(&visitors, ip("192.0.2.1"), 3).is_some(), "places come back when slots drop");
        drop(other);
    }

    #[test]
    fn keys_leave_the_table_when_their_last_slot_drops() {
        let visitors = Visitors::default();
        let slots: Vec<_> = (0..100u8).map(|i| share(&visitors, IpAddr::from([10, 0, 0, i]), 1).unwrap()).collect();
        assert_eq!(visitors.keys(), 100);
        assert!(share(&visitors, ip("10.0.0.200"), 0).is_none(), "a refusal leaves nothing behind");
        drop(slots);
        assert_eq!(visitors.keys(), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let visitors = Visitors::default();
        let _a = share(&visitors, ip("2001:db8:1:2::1"), 2).unwrap();
        let _b = share(&visitors, ip("2001:db8:1:2:ffff::9"), 2).unwrap();
        assert!(share(&visitors, ip("2001:db8:1:2::77"), 2).is_none(), "one /64 shares one quota");
        assert!(share(&visitors, ip("2001:db8:1:3::1"), 2).is_some(), "the next /64 is another visitor");
        let mapped = share(&visitors, ip("::ffff:192.0.2.7"), 2).unwrap();
        assert_eq!(mapped.key().to_string(), "192.0.2.7");
        assert_eq!(visitors.open_for(ip("192.0.2.7")), 1);
        assert_eq!(VisitorKey::of(ip("2001:db8:1:2:3:4:5:6")).to_string(), "2001:db8:1:2::/64");
    }
}
