//! The `Store` contract: one suite, written against the trait, run against
//! every backend (today the embedded redb store; the Redis backend joins it).
//! Time is passed in, so grace periods are tested without waiting.

use std::collections::HashSet;
use std::sync::Arc;

use terrier_server::store::embedded::EmbeddedStore;
use terrier_server::store::redis::RedisStore;
use terrier_server::store::{Claim, FreedPort, ParkedPort, Reservation, Store, StoreError, MAX_HELD_PORTS};
use terrier_testkit::RedisServer;

const GRACE_MS: u64 = 60_000;

/// "Now" for the checks: the real clock, because Redis expires keys by its
/// own clock; later instants are passed explicitly.
fn clock_now() -> u64 {
    terrier_server::store::now_ms()
}

fn claim<'a>(name: &'a str, services: &'a [String], session: &'a str, now_ms: u64) -> Claim<'a> {
    Claim { name, services, session, node: "node-a", now_ms, grace_ms: GRACE_MS, port_range: 20000..=20999 }
}

fn services(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

async fn embedded() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("t.redb")).unwrap();
    (Arc::new(store), dir)
}

async fn redis() -> (Arc<dyn Store>, RedisServer) {
    let server = RedisServer::start().await;
    let store = RedisStore::connect(&server.url(), "terrier:", std::time::Duration::from_secs(2)).await.unwrap();
    (Arc::new(store), server)
}

/// Runs every contract check against a fresh store from `make`.
macro_rules! contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn new_device_gets_subdomain_and_ports_in_range() {
                let (store, _keep) = $make.await;
                check_new_device(&*store).await;
            }
            #[tokio::test]
            async fn reconnect_within_grace_keeps_everything() {
                let (store, _keep) = $make.await;
                check_grace(&*store).await;
            }
            #[tokio::test]
            async fn expired_lease_is_replaced_and_indexes_freed() {
                let (store, _keep) = $make.await;
                check_expiry(&*store).await;
            }
            #[tokio::test]
            async fn stale_session_cannot_release_a_newer_one() {
                let (store, _keep) = $make.await;
                check_stale_release(&*store).await;
            }
            #[tokio::test]
            async fn ports_and_subdomains_are_never_shared() {
                let (store, _keep) = $make.await;
                check_uniqueness(store).await;
            }
            #[tokio::test]
            async fn failed_writes_in_a_concurrent_burst_leave_nothing_behind() {
                let (store, _keep) = $make.await;
                check_burst(store).await;
            }
            #[tokio::test]
            async fn exhausted_range_is_an_error() {
                let (store, _keep) = $make.await;
                check_exhaustion(&*store).await;
            }
            #[tokio::test]
            async fn recovered_node_starts_grace_for_its_devices() {
                let (store, _keep) = $make.await;
                check_recovery(&*store).await;
            }
            #[tokio::test]
            async fn holders_name_the_current_session() {
                let (store, _keep) = $make.await;
                check_holders(&*store).await;
            }
            #[tokio::test]
            async fn reserved_subdomain_is_given_to_its_name_only() {
                let (store, _keep) = $make.await;
                check_reservations(&*store).await;
            }
            #[tokio::test]
            async fn leases_lists_live_leases_only() {
                let (store, _keep) = $make.await;
                check_leases(&*store).await;
            }
            #[tokio::test]
            async fn blobs_round_trip_and_delete() {
                let (store, _keep) = $make.await;
                check_blobs(&*store).await;
            }
            #[tokio::test]
            async fn missing_service_keeps_its_port_until_grace_from_that_claim() {
                let (store, _keep) = $make.await;
                check_parking(&*store).await;
            }
            #[tokio::test]
            async fn parked_port_is_freed_by_the_next_claim_after_its_time() {
                let (store, _keep) = $make.await;
                check_parking_claim_expiry(&*store).await;
            }
            #[tokio::test]
            async fn a_lease_holds_at_most_max_held_ports_parked_or_not() {
                let (store, _keep) = $make.await;
                check_parking_cap(&*store).await;
            }
            #[tokio::test]
            async fn expired_lease_frees_its_parked_ports() {
                let (store, _keep) = $make.await;
                check_parking_lease_expiry(&*store).await;
            }
            #[tokio::test]
            async fn reassigned_port_avoids_unbindable_ones() {
                let (store, _keep) = $make.await;
                check_reassign(&*store).await;
            }
        }
    };
}

contract!(embedded_store, embedded());
contract!(redis_store, redis());

async fn check_new_device(store: &dyn Store) {
    let t0 = clock_now();
    let svc = services(&["22", "mqtt"]);
    let lease = store.claim(claim("thermo-42", &svc, "s1", t0)).await.unwrap();
    assert_eq!(lease.subdomain.len(), 10);
    assert!(terrier_proto::name::is_valid_subdomain(&lease.subdomain));
    assert_eq!(lease.ports.len(), 2);
    assert!(lease.ports.values().all(|p| (20000..=20999).contains(p)));
    assert_eq!(lease.online.as_ref().unwrap().session, "s1");
    let found = store.by_subdomain(&lease.subdomain, t0).await.unwrap().unwrap();
    assert_eq!(found, lease);
    assert_eq!(store.by_name("thermo-42", t0).await.unwrap().unwrap(), lease);
    assert!(store.by_subdomain("zzzzzzzzzz", t0).await.unwrap().is_none());
}

async fn check_grace(store: &dyn Store) {
    let t0 = clock_now();
    let svc = services(&["22", "mqtt"]);
    let first = store.claim(claim("dev", &svc, "s1", t0)).await.unwrap();
    store.release("dev", "s1", t0 + 10, GRACE_MS).await.unwrap();
    let offline = store.by_subdomain(&first.subdomain, t0 + 20).await.unwrap().unwrap();
    assert!(offline.online.is_none());
    assert_eq!(offline.last_seen_ms, t0 + 10);
    assert_eq!(offline.expires_at_ms, Some(t0 + 10 + GRACE_MS));
    let back = store.claim(claim("dev", &svc, "s2", t0 + GRACE_MS)).await.unwrap();
    assert_eq!(back.subdomain, first.subdomain);
    assert_eq!(back.ports, first.ports);
    // A service dropped on reconnect parks its port; a new one gets a port.
    let fewer = services(&["22", "modbus"]);
    let changed = store.claim(claim("dev", &fewer, "s3", t0 + GRACE_MS + 1)).await.unwrap();
    assert_eq!(changed.ports["22"], first.ports["22"]);
    assert!(!changed.ports.contains_key("mqtt"));
    assert_eq!(changed.parked["mqtt"].port, first.ports["mqtt"]);
    assert!(changed.ports.contains_key("modbus"));
}

/// A claim on a two-port range; both ports go to `dev`'s services `a` and `b`.
fn tight<'a>(name: &'a str, services: &'a [String], session: &'a str, now_ms: u64) -> Claim<'a> {
    Claim { port_range: 45000..=45001, ..claim(name, services, session, now_ms) }
}

async fn check_parking(store: &dyn Store) {
    let t0 = clock_now();
    let (both, only_a, other) = (services(&["a", "b"]), services(&["a"]), services(&["x"]));
    let first = store.claim(tight("dev", &both, "s1", t0)).await.unwrap();
    let port_b = first.ports["b"];

    // Back with `a` only: `b`'s port is parked, out of everyone else's reach.
    let fewer = store.claim(tight("dev", &only_a, "s2", t0 + 10)).await.unwrap();
    assert_eq!(fewer.ports.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(fewer.ports["a"], first.ports["a"]);
    assert_eq!(fewer.parked["b"], ParkedPort { port: port_b, until_ms: t0 + 10 + GRACE_MS });
    assert_eq!(store.by_name("dev", t0 + 11).await.unwrap().unwrap(), fewer);
    let refused = store.claim(tight("other", &other, "o1", t0 + 11)).await;
    assert!(matches!(refused, Err(StoreError::NoFreePort(_))), "{refused:?}");

    // Announced again: the same port, nothing parked.
    let back = store.claim(tight("dev", &both, "s3", t0 + 20)).await.unwrap();
    assert_eq!(back.ports, first.ports);
    assert!(back.parked.is_empty());

    // Missing again: the time counts from this claim, and a later claim
    // without `b` (online or after a disconnect) does not extend it.
    let t1 = t0 + 30;
    store.claim(tight("dev", &only_a, "s4", t1)).await.unwrap();
    store.release("dev", "s4", t1 + 5, 10 * GRACE_MS).await.unwrap();
    let again = store.claim(tight("dev", &only_a, "s5", t1 + 10)).await.unwrap();
    assert_eq!(again.parked["b"], ParkedPort { port: port_b, until_ms: t1 + GRACE_MS });
    let swept = store.sweep(t1 + GRACE_MS - 1).await.unwrap();
    assert!(swept.unparked.is_empty() && swept.expired.is_empty(), "{swept:?}");
    let refused = store.claim(tight("other", &other, "o2", t1 + GRACE_MS - 1)).await;
    assert!(matches!(refused, Err(StoreError::NoFreePort(_))), "{refused:?}");

    // Its time over, a sweep frees it (once) and anyone may have it.
    let end = t1 + GRACE_MS;
    let swept = store.sweep(end).await.unwrap();
    assert_eq!(swept.unparked, vec![FreedPort { name: "dev".into(), service: "b".into(), port: port_b }]);
    assert!(swept.expired.is_empty());
    assert!(store.sweep(end).await.unwrap().unparked.is_empty(), "sweep is idempotent");
    let kept = store.by_name("dev", end).await.unwrap().unwrap();
    assert!(kept.parked.is_empty());
    assert_eq!(kept.ports["a"], first.ports["a"]);
    let taken = store.claim(tight("other", &other, "o3", end)).await.unwrap();
    assert_eq!(taken.ports["x"], port_b);
    // `dev` announcing `b` now gets no port: the range is full.
    let refused = store.claim(tight("dev", &both, "s6", end + 1)).await;
    assert!(matches!(refused, Err(StoreError::NoFreePort(_))), "{refused:?}");
}

async fn check_parking_claim_expiry(store: &dyn Store) {
    let t0 = clock_now();
    let (both, only_a, other) = (services(&["a", "b"]), services(&["a"]), services(&["x"]));
    let first = store.claim(tight("dev", &both, "s1", t0)).await.unwrap();
    store.claim(tight("dev", &only_a, "s2", t0)).await.unwrap();
    // Without a sweep, the device's next claim after the time frees the port.
    let later = store.claim(tight("dev", &only_a, "s3", t0 + GRACE_MS)).await.unwrap();
    assert!(later.parked.is_empty(), "{later:?}");
    let taken = store.claim(tight("other", &other, "o1", t0 + GRACE_MS)).await.unwrap();
    assert_eq!(taken.ports["x"], first.ports["b"]);
    // A claim with no grace period parks nothing.
    let none = Claim { grace_ms: 0, ..claim("zero", &both, "z1", t0) };
    let zero = store.claim(none).await.unwrap();
    let fewer = store.claim(Claim { grace_ms: 0, ..claim("zero", &only_a, "z2", t0) }).await.unwrap();
    assert!(fewer.parked.is_empty());
    let dropped = zero.ports["b"];
    let c = Claim { port_range: dropped..=dropped, ..claim("next", &other, "n1", t0) };
    assert_eq!(store.claim(c).await.unwrap().ports["x"], dropped);
}

async fn check_parking_cap(store: &dyn Store) {
    let t0 = clock_now();
    // Each connect announces 16 new services: the old ones are parked, but
    // never more than MAX_HELD_PORTS in all; the ones due soonest go first.
    let mut held = std::collections::BTreeSet::new();
    let mut last = None;
    for round in 0..4u64 {
        let ids: Vec<String> = (0..16).map(|i| format!("r{round}s{i}")).collect();
        let lease = store.claim(in_32("hoarder", &ids, t0 + round)).await.unwrap();
        assert!(lease.ports.len() + lease.parked.len() <= MAX_HELD_PORTS, "round {round}: {lease:?}");
        held = lease.ports.values().chain(lease.parked.values().map(|p| &p.port)).copied().collect();
        last = Some(lease);
    }
    let last = last.unwrap();
    assert_eq!(held.len(), MAX_HELD_PORTS);
    assert!(last.parked.is_empty(), "16 announced leave no room to park: {last:?}");
    // Fewer announced leaves room for the newest parked ones.
    let few = services(&["r3s0", "r3s1"]);
    let lease = store.claim(in_32("hoarder", &few, t0 + 10)).await.unwrap();
    assert_eq!(lease.ports.len() + lease.parked.len(), MAX_HELD_PORTS, "{lease:?}");
    // The 32-port range still has room for another device's 16.
    let others: Vec<String> = (0..16).map(|i| format!("o{i}")).collect();
    assert!(store.claim(in_32("other", &others, t0 + 11)).await.is_ok());
}

/// A claim in a range of 32 ports: two devices' worth of services.
fn in_32<'a>(name: &'a str, services: &'a [String], now_ms: u64) -> Claim<'a> {
    Claim { port_range: 45100..=45131, ..claim(name, services, "s", now_ms) }
}

async fn check_parking_lease_expiry(store: &dyn Store) {
    let t0 = clock_now();
    let (both, only_a, other) = (services(&["a", "b"]), services(&["a"]), services(&["x", "y"]));
    store.claim(tight("dev", &both, "s1", t0)).await.unwrap();
    store.claim(tight("dev", &only_a, "s2", t0)).await.unwrap();
    // The lease ends before its parked port's time: both ports go with it.
    store.release("dev", "s2", t0, GRACE_MS / 2).await.unwrap();
    let after = t0 + GRACE_MS / 2;
    let swept = store.sweep(after).await.unwrap();
    assert_eq!(swept.expired.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["dev"]);
    let taken = store.claim(tight("other", &other, "o1", after)).await.unwrap();
    assert_eq!(taken.ports.len(), 2);
}

async fn check_expiry(store: &dyn Store) {
    let t0 = clock_now();
    let svc = services(&["22"]);
    let first = store.claim(claim("dev", &svc, "s1", t0)).await.unwrap();
    store.release("dev", "s1", t0, GRACE_MS).await.unwrap();
    let after = t0 + GRACE_MS + 1;
    assert!(store.by_subdomain(&first.subdomain, after).await.unwrap().is_none());
    let swept = store.sweep(after).await.unwrap();
    assert_eq!(swept.expired.len(), 1);
    assert_eq!(swept.expired[0].name, "dev");
    assert!(store.sweep(after).await.unwrap().expired.is_empty(), "sweep is idempotent");
    let second = store.claim(claim("dev", &svc, "s2", after)).await.unwrap();
    assert_ne!(second.subdomain, first.subdomain);
    // Without a sweep, an expired lease is also replaced on claim.
    store.release("dev", "s2", after, GRACE_MS).await.unwrap();
    let later = after + GRACE_MS + 1;
    let third = store.claim(claim("dev", &svc, "s3", later)).await.unwrap();
    assert_ne!(third.subdomain, second.subdomain);
    assert!(store.by_subdomain(&second.subdomain, later).await.unwrap().is_none());
}

async fn check_stale_release(store: &dyn Store) {
    let t0 = clock_now();
    let svc = services(&[]);
    store.claim(claim("dev", &svc, "old", t0)).await.unwrap();
    store.claim(claim("dev", &svc, "new", t0 + 1)).await.unwrap();
    store.release("dev", "old", t0 + 2, GRACE_MS).await.unwrap();
    let lease = store.by_name("dev", t0 + 3).await.unwrap().unwrap();
    assert_eq!(lease.online.unwrap().session, "new");
    store.release("ghost", "x", t0, GRACE_MS).await.unwrap();
}

async fn check_uniqueness(store: Arc<dyn Store>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.spawn(async move {
            let t0 = clock_now();
            let name = format!("dev-{i}");
            let svc = services(&["a", "b"]);
            let c = Claim { node: "n", port_range: 30000..=30099, ..claim(&name, &svc, "s", t0) };
            store.claim(c).await.unwrap()
        });
    }
    let mut subs = HashSet::new();
    let mut ports = HashSet::new();
    while let Some(lease) = tasks.join_next().await {
        let lease = lease.unwrap();
        assert!(subs.insert(lease.subdomain.clone()));
        for p in lease.ports.values() {
            assert!(ports.insert(*p), "port {p} given twice");
        }
    }
    assert_eq!(ports.len(), 80);
}

/// Writes arriving together (the embedded store commits them as one batch)
/// stay atomic one by one: of 40 claims for 20 ports, 20 get a port and 20
/// fail without leaving a lease, a subdomain or a port behind.
async fn check_burst(store: Arc<dyn Store>) {
    let t0 = clock_now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.spawn(async move {
            let (name, svc) = (format!("burst-{i}"), services(&["a"]));
            let c = Claim { node: "n", port_range: 31000..=31019, ..claim(&name, &svc, "s", t0) };
            store.claim(c).await.map(|lease| lease.ports["a"])
        });
    }
    let (mut ports, mut refused) = (HashSet::new(), 0);
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            Ok(port) => assert!(ports.insert(port), "port {port} given twice"),
            Err(StoreError::NoFreePort(_)) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ports.len(), refused), (20, 20));
    assert_eq!(store.leases(t0).await.unwrap().len(), 20, "a failed claim left a lease");
}

async fn check_exhaustion(store: &dyn Store) {
    let t0 = clock_now();
    let svc = services(&["a", "b", "c"]);
    let c = Claim { node: "n", port_range: 40000..=40001, ..claim("big", &svc, "s", t0) };
    let refused = store.claim(c).await;
    assert!(matches!(refused, Err(StoreError::NoFreePort(_))), "{refused:?}");
    // The failed claim left nothing behind: a smaller one fits the range.
    let two = services(&["a", "b"]);
    let c = Claim {
        name: "big",
        services: &two,
        session: "s",
        node: "n",
        now_ms: t0,
        grace_ms: GRACE_MS,
        port_range: 40000..=40001,
    };
    let lease = store.claim(c).await.unwrap();
    assert_eq!(lease.ports.len(), 2);
}

async fn check_recovery(store: &dyn Store) {
    let t0 = clock_now();
    let svc = services(&["22"]);
    let lease = store.claim(claim("dev", &svc, "s1", t0)).await.unwrap();
    assert_eq!(store.recover_node("node-a", t0 + 5, GRACE_MS).await.unwrap(), 1);
    let recovered = store.by_name("dev", t0 + 6).await.unwrap().unwrap();
    assert!(recovered.online.is_none());
    assert_eq!(recovered.expires_at_ms, Some(t0 + 5 + GRACE_MS));
    let back = store.claim(claim("dev", &svc, "s2", t0 + 100)).await.unwrap();
    assert_eq!((back.subdomain, back.ports), (lease.subdomain, lease.ports));
}

async fn check_reassign(store: &dyn Store) {
    let t0 = clock_now();
    let svc = services(&["22"]);
    let c = Claim { node: "n", port_range: 50000..=50002, ..claim("dev", &svc, "s", t0) };
    let lease = store.claim(c).await.unwrap();
    let first = lease.ports["22"];
    let moved = store.reassign_port("dev", "22", &[first], 50000..=50002).await.unwrap();
    let second = moved.ports["22"];
    assert_ne!(second, first);
    let moved = store.reassign_port("dev", "22", &[first, second], 50000..=50002).await.unwrap();
    let third = moved.ports["22"];
    assert!(third != first && third != second);
    assert!(matches!(
        store.reassign_port("dev", "22", &[50000, 50001, 50002], 50000..=50002).await,
        Err(StoreError::NoFreePort(_))
    ));
    assert!(matches!(store.reassign_port("ghost", "22", &[], 50000..=50002).await, Err(StoreError::NoLease(_))));
}

async fn check_holders(store: &dyn Store) {
    let t0 = clock_now();
    let none = services(&[]);
    store.claim(claim("on", &none, "s-on", t0)).await.unwrap();
    store.claim(claim("off", &none, "s-off", t0)).await.unwrap();
    store.release("off", "s-off", t0, GRACE_MS).await.unwrap();
    let names = ["on", "off", "never"].map(String::from);
    let holders = store.holders(&names).await.unwrap();
    assert_eq!(holders, vec![Some("s-on".to_string()), None, None]);
    store.claim(claim("on", &none, "s-new", t0 + 1)).await.unwrap();
    assert_eq!(store.holders(&names[..1]).await.unwrap(), vec![Some("s-new".to_string())]);
    assert!(store.holders(&[]).await.unwrap().is_empty());
}

async fn check_reservations(store: &dyn Store) {
    let t0 = clock_now();
    let none = services(&[]);
    // A device online with a random subdomain gets its reservation at its next claim.
    let first = store.claim(claim("thermo", &none, "s1", t0)).await.unwrap();
    store.reserve("thermo", "heating", t0).await.unwrap();
    assert_eq!(
        store.reservations().await.unwrap(),
        vec![Reservation { name: "thermo".into(), subdomain: "heating".into() }]
    );
    let again = store.claim(claim("thermo", &none, "s2", t0 + 1)).await.unwrap();
    assert_eq!(again.subdomain, "heating");
    assert!(store.by_subdomain(&first.subdomain, t0 + 2).await.unwrap().is_none(), "old subdomain freed");
    assert_eq!(store.by_subdomain("heating", t0 + 2).await.unwrap().unwrap().name, "thermo");
    // Nobody else can reserve it, nor a subdomain another device holds.
    assert!(matches!(store.reserve("other", "heating", t0).await, Err(StoreError::SubdomainTaken(_))));
    let other = store.claim(claim("other", &none, "s3", t0)).await.unwrap();
    assert!(matches!(store.reserve("thermo", &other.subdomain, t0).await, Err(StoreError::SubdomainTaken(_))));
    // A new device with a reservation gets it at once, even after expiry.
    store.reserve("fresh", "fresh-label", t0).await.unwrap();
    assert_eq!(store.claim(claim("fresh", &none, "s4", t0)).await.unwrap().subdomain, "fresh-label");
    store.release("fresh", "s4", t0, GRACE_MS).await.unwrap();
    let later = t0 + GRACE_MS + 1;
    store.sweep(later).await.unwrap();
    assert_eq!(store.claim(claim("fresh", &none, "s5", later)).await.unwrap().subdomain, "fresh-label");
    // Re-reserving moves the name to a new label and frees the old one.
    store.reserve("fresh", "fresh-two", t0).await.unwrap();
    store.reserve("someone", "fresh-label", later).await.unwrap_err();
    assert!(store.unreserve("thermo").await.unwrap());
    assert!(!store.unreserve("thermo").await.unwrap());
    let names: Vec<String> = store.reservations().await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["fresh"]);
}

async fn check_leases(store: &dyn Store) {
    let t0 = clock_now();
    let none = services(&[]);
    store.claim(claim("on", &none, "s1", t0)).await.unwrap();
    store.claim(claim("away", &none, "s2", t0)).await.unwrap();
    store.release("away", "s2", t0, GRACE_MS).await.unwrap();
    store.claim(claim("gone", &none, "s3", t0)).await.unwrap();
    store.release("gone", "s3", t0 - GRACE_MS - 10, GRACE_MS).await.unwrap();
    let mut names: Vec<String> = store.leases(t0 + 1).await.unwrap().into_iter().map(|l| l.name).collect();
    names.sort();
    assert_eq!(names, ["away", "on"]);
}

async fn check_blobs(store: &dyn Store) {
    assert_eq!(store.get_blob("acme/x").await.unwrap(), None);
    let binary: Vec<u8> = (0..=255).collect();
    store.put_blob("acme/x", &binary).await.unwrap();
    store.put_blob("acme/y", b"other").await.unwrap();
    assert_eq!(store.get_blob("acme/x").await.unwrap(), Some(binary));
    store.put_blob("acme/x", b"replaced").await.unwrap();
    assert_eq!(store.get_blob("acme/x").await.unwrap().as_deref(), Some(&b"replaced"[..]));
    store.put_blob("acme/x", b"").await.unwrap();
    assert_eq!(store.get_blob("acme/x").await.unwrap(), None);
    assert_eq!(store.get_blob("acme/y").await.unwrap().as_deref(), Some(&b"other"[..]));
    // The first value inserted stays; later callers get it back.
    assert_eq!(store.blob_or_insert("secret", b"first").await.unwrap(), b"first");
    assert_eq!(store.blob_or_insert("secret", b"second").await.unwrap(), b"first");
    assert_eq!(store.get_blob("secret").await.unwrap().as_deref(), Some(&b"first"[..]));
}

/// A lease hash written before parked ports existed has no `parked` field:
/// it still reads, and a claim with fewer services parks from it.
#[tokio::test]
async fn redis_store_claims_a_lease_written_without_parked_ports() {
    let (store, server) = redis().await;
    let t0 = clock_now();
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (seen, exp) = (t0.to_string(), (t0 + GRACE_MS).to_string());
    let fields = [
        ("name", "old"),
        ("sub", "oldlabel12"),
        ("ports", "a=20001;b=20002"),
        ("session", ""),
        ("node", "node-a"),
        ("since", "1"),
        ("seen", seen.as_str()),
        ("exp", exp.as_str()),
    ];
    let mut pipe = ::redis::pipe();
    pipe.cmd("HSET").arg("terrier:lease:old").arg(&fields[..]).ignore();
    pipe.cmd("SET").arg("terrier:sub:oldlabel12").arg("old").ignore();
    pipe.cmd("SET").arg("terrier:port:20001").arg("old").ignore();
    pipe.cmd("SET").arg("terrier:port:20002").arg("old").ignore();
    pipe.query_async::<()>(&mut conn).await.unwrap();

    let read = store.by_name("old", t0).await.unwrap().expect("the old lease is live");
    assert!(read.parked.is_empty());
    assert_eq!(read.ports.len(), 2);
    let only_a = services(&["a"]);
    let claimed = store.claim(claim("old", &only_a, "s1", t0 + 1)).await.unwrap();
    assert_eq!(claimed.subdomain, "oldlabel12");
    assert_eq!(claimed.ports["a"], 20001);
    assert_eq!(claimed.parked["b"], ParkedPort { port: 20002, until_ms: t0 + 1 + GRACE_MS });
    let c = Claim { port_range: 20002..=20002, ..claim("other", &only_a, "o1", t0 + 2) };
    assert!(matches!(store.claim(c).await, Err(StoreError::NoFreePort(_))));
}
