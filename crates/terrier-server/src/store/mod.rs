//! Shared state behind one trait: leases (a device name's subdomain and TCP
//! ports), the subdomain and port indexes, and who is online.
//!
//! The embedded backend ([`embedded::EmbeddedStore`], a redb file) is the
//! default for one node. A Redis backend for clusters implements the same
//! trait; `tests/e2e/store_contract.rs` holds the conformance suite every backend
//! must pass. Times are Unix milliseconds passed in by the caller, so the
//! store has no clock of its own and tests decide what "now" is.

pub mod embedded;
pub mod metered;
pub mod redis;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What a device holds while online and for the grace period after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Device name (the key).
    pub name: String,
    /// Subdomain label the device's HTTP service is reached at.
    pub subdomain: String,
    /// Public TCP port of each TCP service id the current (or last) session
    /// announced.
    pub ports: BTreeMap<String, u16>,
    /// Ports still held for services a later session did not announce, so a
    /// device that comes back with them gets the same ports (absent in
    /// records written before parking existed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parked: BTreeMap<String, ParkedPort>,
    /// Set while a session holds the lease.
    pub online: Option<Online>,
    /// Last time the device was seen (connect or disconnect), Unix ms.
    pub last_seen_ms: u64,
    /// While offline: when the lease ends, Unix ms.
    pub expires_at_ms: Option<u64>,
}

/// The session currently holding a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Online {
    /// Session id given in `welcome`.
    pub session: String,
    /// Node the session is connected to.
    pub node: String,
    /// When the session started, Unix ms.
    pub since_ms: u64,
}

/// The port of a TCP service that the session holding the lease did not
/// announce: reserved for the device, like an offline device's ports, until
/// `until_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedPort {
    /// The public port nobody else may take meanwhile.
    pub port: u16,
    /// When the port is freed unless the service is announced again, Unix
    /// ms: the grace period in force when the service went missing, counted
    /// from that claim (later claims without it do not extend it).
    pub until_ms: u64,
}

impl Lease {
    /// Is the lease still held at `now_ms` (online, or inside its grace period)?
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.online.is_some() || self.expires_at_ms.is_some_and(|t| t > now_ms)
    }

    /// Every port the lease holds, announced and parked (service -> port):
    /// the listeners a node keeps bound for the device.
    pub fn held_ports(&self) -> BTreeMap<String, u16> {
        let parked = self.parked.iter().map(|(service, p)| (service.clone(), p.port));
        self.ports.iter().map(|(service, port)| (service.clone(), *port)).chain(parked).collect()
    }
}

/// Most TCP ports one lease holds, announced and parked together.
pub const MAX_HELD_PORTS: usize = terrier_proto::limits::MAX_SERVICES;

/// A device asking for its lease as it comes online.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// Device name.
    pub name: &'a str,
    /// TCP service ids that need a public port.
    pub services: &'a [String],
    /// The new session's id.
    pub session: &'a str,
    /// The node the session is on.
    pub node: &'a str,
    /// Now, Unix ms.
    pub now_ms: u64,
    /// The grace period in force: how long the port of a service this
    /// session no longer announces stays reserved, from now.
    pub grace_ms: u64,
    /// Ports the store may hand out.
    pub port_range: RangeInclusive<u16>,
}

/// What [`Store::sweep`] freed, so the node can close the listeners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Leases whose grace period ended, deleted with all their ports.
    pub expired: Vec<Lease>,
    /// Parked ports whose time ran out, taken off their (live) leases.
    pub unparked: Vec<FreedPort>,
}

/// A parked port a sweep freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreedPort {
    /// Device name.
    pub name: String,
    /// The service it was held for.
    pub service: String,
    /// The port, now free for anyone.
    pub port: u16,
}

/// Store failures; callers answer a device with 503 for all of them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Every port of the range is leased.
    #[error("no free TCP port in {0:?}")]
    NoFreePort(RangeInclusive<u16>),
    /// The device has no lease (it expired or was never made).
    #[error("no lease for device {0:?}")]
    NoLease(String),
    /// The subdomain is reserved for, or held by, another device.
    #[error("subdomain {0:?} is taken by another device")]
    SubdomainTaken(String),
    /// The backend failed (disk, network, corrupt record).
    #[error("store backend: {0}")]
    Backend(String),
}

/// The operations terrierd needs from shared state. Every method is atomic:
/// two nodes (or two handshakes) can never get one subdomain or one port.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Takes (or creates) the lease of `claim.name` for a new session: a live
    /// lease keeps its subdomain and the ports of services asked for again
    /// (parked ones included); an expired or missing one gets a fresh
    /// subdomain and fresh ports. The ports of services no longer announced
    /// are parked until `claim.grace_ms` from now; parked ports whose time
    /// ran out are freed.
    async fn claim(&self, claim: Claim<'_>) -> Result<Lease, StoreError>;

    /// Gives `service` of device `name` another port than any in `avoid`
    /// (which could not be bound), keeping the rest of the lease.
    async fn reassign_port(
        &self,
        name: &str,
        service: &str,
        avoid: &[u16],
        port_range: RangeInclusive<u16>,
    ) -> Result<Lease, StoreError>;

    /// Marks the lease offline if `session` still holds it; the lease then
    /// lasts `grace_ms` more.
    async fn release(&self, name: &str, session: &str, now_ms: u64, grace_ms: u64) -> Result<(), StoreError>;

    /// The live lease a subdomain belongs to.
    async fn by_subdomain(&self, subdomain: &str, now_ms: u64) -> Result<Option<Lease>, StoreError>;

    /// The live lease of a device name.
    async fn by_name(&self, name: &str, now_ms: u64) -> Result<Option<Lease>, StoreError>;

    /// Deletes leases whose grace period is over and frees parked ports
    /// whose time ran out; returns both, so the node can close their port
    /// listeners.
    async fn sweep(&self, now_ms: u64) -> Result<Swept, StoreError>;

    /// After `node` restarted, its sessions are gone: mark their leases
    /// offline with a fresh grace period so returning devices keep them.
    async fn recover_node(&self, node: &str, now_ms: u64, grace_ms: u64) -> Result<usize, StoreError>;

    /// Announces (or refreshes) a node for `ttl_ms`; a node that stops
    /// refreshing disappears from [`Store::nodes`] when the TTL runs out.
    async fn register_node(&self, node: &NodeInfo, ttl_ms: u64) -> Result<(), StoreError>;

    /// The live nodes (registered and not expired).
    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError>;

    /// Ids of nodes that once registered and whose registration expired,
    /// forgetting them. Their online leases should be recovered.
    async fn dead_nodes(&self) -> Result<Vec<String>, StoreError>;

    /// The session holding each named lease now (`None`: offline or no
    /// lease), in one round trip. Nodes use it to notice that a device moved
    /// to another node.
    async fn holders(&self, names: &[String]) -> Result<Vec<Option<String>>, StoreError>;

    /// Writes back a lease this node holds online after the store lost it
    /// (Redis restarted empty): kept if the name has no other live lease and
    /// its subdomain and ports are still free. Returns the lease now stored.
    async fn restore(&self, lease: &Lease, now_ms: u64) -> Result<Lease, StoreError>;

    /// Every live lease (online or in its grace period), for the admin API.
    async fn leases(&self, now_ms: u64) -> Result<Vec<Lease>, StoreError>;

    /// Reserves `subdomain` for device `name` for good: its leases always
    /// get it (from its next connection on), and no other device can. Fails
    /// with [`StoreError::SubdomainTaken`] when another device holds or
    /// reserved it. Replaces an earlier reservation of `name`.
    async fn reserve(&self, name: &str, subdomain: &str, now_ms: u64) -> Result<(), StoreError>;

    /// Drops the reservation of `name`; returns whether there was one. A
    /// live lease keeps the subdomain until it expires.
    async fn unreserve(&self, name: &str) -> Result<bool, StoreError>;

    /// Every reservation, sorted by name.
    async fn reservations(&self) -> Result<Vec<Reservation>, StoreError>;

    /// The bytes last stored under `key` by [`Store::put_blob`], if any.
    /// Small shared records that are not leases (ACME account and
    /// certificates) live here, so every node of a cluster sees them.
    async fn get_blob(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores `value` under `key`, replacing what was there; an empty
    /// `value` deletes the key.
    async fn put_blob(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// The blob under `key`; when there is none, stores `value` there first,
    /// atomically, so nodes starting together all end up with one value.
    async fn blob_or_insert(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError>;
}

/// A subdomain reserved for one device name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Device name.
    pub name: String,
    /// The subdomain label it always gets.
    pub subdomain: String,
}

/// One terrierd node as the others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Base URL agents use to reach this node (the target of 307 redirects).
    pub advertise_url: String,
    /// Base URL other nodes forward visitor requests to.
    pub internal_url: String,
    /// Devices online on this node.
    pub devices: u64,
    /// When the node last refreshed this, Unix ms.
    #[serde(default)]
    pub updated_ms: u64,
}

/// Current wall-clock time in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_written_before_parked_ports_existed_still_reads() {
        let old = r#"{"name":"dev","subdomain":"abcdefghij","ports":{"ssh":20001},"online":null,
            "last_seen_ms":5,"expires_at_ms":10}"#;
        let lease: Lease = serde_json::from_str(old).expect("an old lease record decodes");
        assert!(lease.parked.is_empty());
        assert_eq!(lease.held_ports(), lease.ports);
        // And nothing parked writes the old shape back.
        assert!(!serde_json::to_string(&lease).unwrap().contains("parked"));
    }

    #[test]
    fn held_ports_include_parked_ones() {
        let lease = Lease {
            name: "dev".into(),
            subdomain: "abcdefghij".into(),
            ports: BTreeMap::from([("a".into(), 20001)]),
            parked: BTreeMap::from([("b".into(), ParkedPort { port: 20002, until_ms: 9 })]),
            online: None,
            last_seen_ms: 0,
            expires_at_ms: None,
        };
        assert_eq!(lease.held_ports(), BTreeMap::from([("a".into(), 20001), ("b".into(), 20002)]));
        let round: Lease = serde_json::from_str(&serde_json::to_string(&lease).unwrap()).unwrap();
        assert_eq!(round, lease);
    }
}
