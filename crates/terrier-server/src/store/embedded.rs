//! The embedded store: one redb file, for a single node with nothing to
//! install. Every operation is one redb write transaction, so it is atomic,
//! and it is durable before its caller gets the answer.
//!
//! Writes go through one writer thread with **group commit**: it runs every
//! write waiting in the queue, each in its own transaction committed without
//! fsync ([`Durability::None`], so a failed one rolls back alone), then makes
//! the whole batch durable with one fsync'd commit and only then answers
//! their callers. One fsync per transaction capped the store at about a
//! thousand writes/s on a virtual disk: a reconnect storm of 10,000 devices
//! (a release and a claim each) queued past the agents' handshake timeout
//! and never drained (bench `storm`). Reads run on tokio's blocking pool.
//!
//! One node owns the file, so [`Store::recover_node`] treats every online
//! lease as belonging to the restarting node.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::Rng;
use redb::backends::FileBackend;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::{
    Claim, FreedPort, Lease, NodeInfo, Online, ParkedPort, Reservation, Store, StoreError, Swept, MAX_HELD_PORTS,
};

/// name -> JSON-encoded [`Lease`].
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");
/// subdomain -> name.
const SUBDOMAINS: TableDefinition<&str, &str> = TableDefinition::new("subdomains");
/// port -> name.
const PORTS: TableDefinition<u16, &str> = TableDefinition::new("ports");
/// key -> bytes of [`Store::put_blob`].
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");

/// Reserved subdomain -> name.
const RESERVED: TableDefinition<&str, &str> = TableDefinition::new("reserved");
/// Name -> its reserved subdomain.
const RESERVATIONS: TableDefinition<&str, &str> = TableDefinition::new("reservations");

/// Random probes for a free port before falling back to a scan of the range.
const PORT_PROBES: usize = 64;

/// Most writes made durable by one fsync (bounds a caller's wait).
const MAX_BATCH: usize = 1024;

/// A write for the writer thread: runs its transaction (committed without
/// fsync) and returns how to answer its caller once the batch is durable
/// (`Some(error)` when that final commit failed).
type Job = Box<dyn FnOnce(&Database) -> Reply + Send>;
/// Answers one caller after the batch's durable commit.
type Reply = Box<dyn FnOnce(Option<String>) + Send>;

/// A [`Store`] in one local redb file.
#[derive(Clone)]
pub struct EmbeddedStore {
    /// The open database; redb serialises write transactions itself.
    db: Arc<Database>,
    /// Queue of the writer thread (see the module doc); it ends when the
    /// last clone of the store is dropped.
    jobs: std::sync::mpsc::Sender<Job>,
    /// Node registrations with their expiry. Only one node uses a file, so
    /// they live in memory: a restart forgets them, as it should.
    nodes: Arc<Mutex<HashMap<String, (NodeInfo, Instant)>>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`, readable only by its
    /// owner: it holds the ACME account and certificate keys.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = crate::private_file::open_owned(path).map_err(backend)?;
        let db = Database::builder().create_with_backend(FileBackend::new(file).map_err(backend)?).map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        {
            txn.open_table(LEASES).map_err(backend)?;
            txn.open_table(SUBDOMAINS).map_err(backend)?;
            txn.open_table(PORTS).map_err(backend)?;
            txn.open_table(BLOBS).map_err(backend)?;
            txn.open_table(RESERVED).map_err(backend)?;
            txn.open_table(RESERVATIONS).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        let db = Arc::new(db);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        // Weak: the file closes with the last store clone, not with the
        // writer thread (a restart on the same file must be able to open it).
        let writer_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("terrierd-store-writer".into())
            .spawn(move || write_batches(&writer_db, &queue))
            .map_err(backend)?;
        Ok(Self { db, jobs, nodes: Arc::default() })
    }

    /// Runs `f` in one write transaction on the writer thread; answers once
    /// it is committed and durable.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tables<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |db: &Database| {
            let result = (|| {
                let mut txn = db.begin_write().map_err(backend)?;
                txn.set_durability(Durability::None).map_err(backend)?;
                let out = {
                    let mut tables = Tables::open(&txn)?;
                    f(&mut tables)?
                };
                txn.commit().map_err(backend)?;
                Ok(out)
            })();
            Box::new(move |flush_failed: Option<String>| {
                let result = match (result, flush_failed) {
                    (Ok(_), Some(e)) => Err(StoreError::Backend(e)),
                    (result, _) => result,
                };
                let _ = answer.send(result);
            })
        });
        self.jobs.send(job).map_err(|_| backend("the store writer has stopped"))?;
        answered.await.map_err(|_| backend("the store writer has stopped"))?
    }

    /// Reads the live lease of `name` in a read transaction.
    async fn read_lease(&self, key: ReadKey, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let leases = txn.open_table(LEASES).map_err(backend)?;
            let name = match key {
                ReadKey::Name(name) => name,
                ReadKey::Subdomain(sub) => {
                    let subs = txn.open_table(SUBDOMAINS).map_err(backend)?;
                    let found = subs.get(sub.as_str()).map_err(backend)?;
                    match found {
                        Some(name) => name.value().to_owned(),
                        None => return Ok(None),
                    }
                }
            };
            let lease = match leases.get(name.as_str()).map_err(backend)? {
                Some(bytes) => decode(bytes.value())?,
                None => return Ok(None),
            };
            Ok(lease.is_live(now_ms).then_some(lease))
        })
        .await
        .map_err(backend)?
    }
}

/// What a read looks a lease up by.
enum ReadKey {
    Name(String),
    Subdomain(String),
}

/// The five tables of one write transaction, with the lease operations.
struct Tables<'txn> {
    leases: Table<'txn, &'static str, &'static [u8]>,
    subdomains: Table<'txn, &'static str, &'static str>,
    ports: Table<'txn, u16, &'static str>,
    reserved: Table<'txn, &'static str, &'static str>,
    reservations: Table<'txn, &'static str, &'static str>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            leases: txn.open_table(LEASES).map_err(backend)?,
            subdomains: txn.open_table(SUBDOMAINS).map_err(backend)?,
            ports: txn.open_table(PORTS).map_err(backend)?,
            reserved: txn.open_table(RESERVED).map_err(backend)?,
            reservations: txn.open_table(RESERVATIONS).map_err(backend)?,
        })
    }

    fn get(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        match self.leases.get(name).map_err(backend)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    fn put(&mut self, lease: &Lease) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(lease).map_err(backend)?;
        self.leases.insert(lease.name.as_str(), bytes.as_slice()).map_err(backend)?;
        Ok(())
    }

    /// Removes a lease and its index entries.
    fn delete(&mut self, lease: &Lease) -> Result<(), StoreError> {
        self.leases.remove(lease.name.as_str()).map_err(backend)?;
        self.drop_subdomain(lease)?;
        for port in lease.ports.values() {
            self.ports.remove(*port).map_err(backend)?;
        }
        for parked in lease.parked.values() {
            self.free_port(&lease.name, parked.port)?;
        }
        Ok(())
    }

    /// Frees `port` if `name` still holds it.
    fn free_port(&mut self, name: &str, port: u16) -> Result<(), StoreError> {
        if self.ports.get(port).map_err(backend)?.is_some_and(|v| v.value() == name) {
            self.ports.remove(port).map_err(backend)?;
        }
        Ok(())
    }

    /// Removes the subdomain index entry of `lease` if it still points at it.
    fn drop_subdomain(&mut self, lease: &Lease) -> Result<(), StoreError> {
        let owner = self.subdomains.get(lease.subdomain.as_str()).map_err(backend)?.map(|v| v.value() == lease.name);
        if owner == Some(true) {
            self.subdomains.remove(lease.subdomain.as_str()).map_err(backend)?;
        }
        Ok(())
    }

    /// The subdomain reserved for `name`, if any.
    fn reservation(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.reservations.get(name).map_err(backend)?.map(|v| v.value().to_owned()))
    }

    fn fresh_subdomain(&mut self, name: &str) -> Result<String, StoreError> {
        if let Some(reserved) = self.reservation(name)? {
            self.subdomains.insert(reserved.as_str(), name).map_err(backend)?;
            return Ok(reserved);
        }
        loop {
            let sub = terrier_transport::ids::random_subdomain();
            let taken = self.subdomains.get(sub.as_str()).map_err(backend)?.is_some()
                || self.reserved.get(sub.as_str()).map_err(backend)?.is_some();
            if !taken {
                self.subdomains.insert(sub.as_str(), name).map_err(backend)?;
                return Ok(sub);
            }
        }
    }

    /// Picks a port of `range` nobody holds and that is not in `avoid`, and
    /// records it for `name`.
    fn fresh_port(&mut self, name: &str, range: &RangeInclusive<u16>, avoid: &[u16]) -> Result<u16, StoreError> {
        let free = |tables: &Self, port: u16| -> Result<bool, StoreError> {
            Ok(!avoid.contains(&port) && tables.ports.get(port).map_err(backend)?.is_none())
        };
        let mut rng = rand::rng();
        let mut chosen = None;
        for _ in 0..PORT_PROBES {
            let port = rng.random_range(range.clone());
            if free(self, port)? {
                chosen = Some(port);
                break;
            }
        }
        if chosen.is_none() {
            for port in range.clone() {
                if free(self, port)? {
                    chosen = Some(port);
                    break;
                }
            }
        }
        let port = chosen.ok_or_else(|| StoreError::NoFreePort(range.clone()))?;
        self.ports.insert(port, name).map_err(backend)?;
        Ok(port)
    }

    fn claim(&mut self, claim: &Claim<'_>) -> Result<Lease, StoreError> {
        let existing = self.get(claim.name)?;
        let live = match existing {
            Some(lease) if lease.is_live(claim.now_ms) => Some(lease),
            Some(expired) => {
                self.delete(&expired)?;
                None
            }
            None => None,
        };
        let mut lease = match live {
            // A reservation made since the lease began applies now.
            Some(mut lease) => {
                if let Some(reserved) = self.reservation(claim.name)?.filter(|r| *r != lease.subdomain) {
                    self.drop_subdomain(&lease)?;
                    self.subdomains.insert(reserved.as_str(), claim.name).map_err(backend)?;
                    lease.subdomain = reserved;
                }
                lease
            }
            None => Lease {
                name: claim.name.to_owned(),
                subdomain: self.fresh_subdomain(claim.name)?,
                ports: BTreeMap::new(),
                parked: BTreeMap::new(),
                online: None,
                last_seen_ms: claim.now_ms,
                expires_at_ms: None,
            },
        };
        for (service, parked) in std::mem::take(&mut lease.parked) {
            if parked.until_ms > claim.now_ms {
                lease.parked.insert(service, parked);
            } else {
                self.free_port(claim.name, parked.port)?;
            }
        }
        // A service missing from this session keeps its port for a grace
        // period, as if that part of the device were offline.
        let until_ms = claim.now_ms.saturating_add(claim.grace_ms);
        let missing: Vec<String> = lease.ports.keys().filter(|s| !claim.services.contains(s)).cloned().collect();
        for service in missing {
            let Some(port) = lease.ports.remove(&service) else { continue };
            if claim.grace_ms > 0 {
                lease.parked.insert(service, ParkedPort { port, until_ms });
            } else {
                self.free_port(claim.name, port)?;
            }
        }
        for service in claim.services {
            if let Some(parked) = lease.parked.remove(service) {
                lease.ports.insert(service.clone(), parked.port);
            }
        }
        // A lease holds at most MAX_HELD_PORTS: past it, the parked ports
        // due soonest go first (a device announcing new services at every
        // connect must not collect the whole range).
        let room = MAX_HELD_PORTS.saturating_sub(claim.services.len());
        while lease.parked.len() > room {
            let soonest = lease.parked.iter().min_by_key(|(_, p)| p.until_ms).map(|(s, _)| s.clone());
            if let Some(parked) = soonest.and_then(|service| lease.parked.remove(&service)) {
                self.free_port(claim.name, parked.port)?;
            }
        }
        for service in claim.services {
            // A port outside a (changed) range is given up for one inside it.
            if let Some(port) = lease.ports.get(service).copied() {
                if claim.port_range.contains(&port) {
                    continue;
                }
                self.ports.remove(port).map_err(backend)?;
            }
            let port = self.fresh_port(claim.name, &claim.port_range, &[])?;
            lease.ports.insert(service.clone(), port);
        }
        lease.online =
            Some(Online { session: claim.session.to_owned(), node: claim.node.to_owned(), since_ms: claim.now_ms });
        lease.last_seen_ms = claim.now_ms;
        lease.expires_at_ms = None;
        self.put(&lease)?;
        Ok(lease)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn claim(&self, claim: Claim<'_>) -> Result<Lease, StoreError> {
        let owned = OwnedClaim::from(&claim);
        self.write(move |t| t.claim(&owned.as_claim())).await
    }

    async fn reassign_port(
        &self,
        name: &str,
        service: &str,
        avoid: &[u16],
        port_range: RangeInclusive<u16>,
    ) -> Result<Lease, StoreError> {
        let (name, service, avoid) = (name.to_owned(), service.to_owned(), avoid.to_vec());
        self.write(move |t| {
            let mut lease = t.get(&name)?.ok_or_else(|| StoreError::NoLease(name.clone()))?;
            let port = t.fresh_port(&name, &port_range, &avoid)?;
            if let Some(old) = lease.ports.insert(service, port) {
                t.ports.remove(old).map_err(backend)?;
            }
            t.put(&lease)?;
            Ok(lease)
        })
        .await
    }

    async fn release(&self, name: &str, session: &str, now_ms: u64, grace_ms: u64) -> Result<(), StoreError> {
        let (name, session) = (name.to_owned(), session.to_owned());
        self.write(move |t| {
            let Some(mut lease) = t.get(&name)? else {
                return Ok(());
            };
            if lease.online.as_ref().is_some_and(|o| o.session == session) {
                lease.online = None;
                lease.last_seen_ms = now_ms;
                lease.expires_at_ms = Some(now_ms + grace_ms);
                t.put(&lease)?;
            }
            Ok(())
        })
        .await
    }

    async fn by_subdomain(&self, subdomain: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        self.read_lease(ReadKey::Subdomain(subdomain.to_owned()), now_ms).await
    }

    async fn by_name(&self, name: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        self.read_lease(ReadKey::Name(name.to_owned()), now_ms).await
    }

    async fn sweep(&self, now_ms: u64) -> Result<Swept, StoreError> {
        self.write(move |t| {
            let mut swept = Swept::default();
            let mut unparking = Vec::new();
            for row in t.leases.iter().map_err(backend)? {
                let (_, bytes) = row.map_err(backend)?;
                let lease = decode(bytes.value())?;
                if !lease.is_live(now_ms) {
                    swept.expired.push(lease);
                } else if lease.parked.values().any(|p| p.until_ms <= now_ms) {
                    unparking.push(lease);
                }
            }
            for lease in &swept.expired {
                t.delete(lease)?;
            }
            for mut lease in unparking {
                let (done, kept) =
                    std::mem::take(&mut lease.parked).into_iter().partition(|(_, p)| p.until_ms <= now_ms);
                lease.parked = kept;
                for (service, parked) in done {
                    t.free_port(&lease.name, parked.port)?;
                    swept.unparked.push(FreedPort { name: lease.name.clone(), service, port: parked.port });
                }
                t.put(&lease)?;
            }
            Ok(swept)
        })
        .await
    }

    async fn recover_node(&self, _node: &str, now_ms: u64, grace_ms: u64) -> Result<usize, StoreError> {
        self.write(move |t| {
            let mut stale = Vec::new();
            for row in t.leases.iter().map_err(backend)? {
                let (_, bytes) = row.map_err(backend)?;
                let lease = decode(bytes.value())?;
                if lease.online.is_some() {
                    stale.push(lease);
                }
            }
            for lease in &mut stale {
                lease.online = None;
                lease.expires_at_ms = Some(now_ms + grace_ms);
                t.put(lease)?;
            }
            Ok(stale.len())
        })
        .await
    }

    async fn register_node(&self, node: &NodeInfo, ttl_ms: u64) -> Result<(), StoreError> {
        let until = Instant::now() + Duration::from_millis(ttl_ms);
        self.nodes.lock().expect("nodes lock").insert(node.id.clone(), (node.clone(), until));
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let now = Instant::now();
        let nodes = self.nodes.lock().expect("nodes lock");
        Ok(nodes.values().filter(|(_, until)| *until > now).map(|(n, _)| n.clone()).collect())
    }

    async fn dead_nodes(&self) -> Result<Vec<String>, StoreError> {
        let now = Instant::now();
        let mut nodes = self.nodes.lock().expect("nodes lock");
        let dead: Vec<String> =
            nodes.iter().filter(|(_, (_, until))| *until <= now).map(|(id, _)| id.clone()).collect();
        for id in &dead {
            nodes.remove(id);
        }
        Ok(dead)
    }

    async fn holders(&self, names: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        let (db, names) = (self.db.clone(), names.to_vec());
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let leases = txn.open_table(LEASES).map_err(backend)?;
            names
                .iter()
                .map(|name| match leases.get(name.as_str()).map_err(backend)? {
                    Some(bytes) => Ok(decode(bytes.value())?.online.map(|o| o.session)),
                    None => Ok(None),
                })
                .collect()
        })
        .await
        .map_err(backend)?
    }

    async fn restore(&self, lease: &Lease, now_ms: u64) -> Result<Lease, StoreError> {
        let lease = lease.clone();
        self.write(move |t| {
            if let Some(current) = t.get(&lease.name)? {
                if current.online.is_some() && current.is_live(now_ms) {
                    return Ok(current);
                }
                t.delete(&current)?;
            }
            let sub_owner = t.subdomains.get(lease.subdomain.as_str()).map_err(backend)?.map(|v| v.value().to_owned());
            if sub_owner.is_some_and(|owner| owner != lease.name) {
                return Err(StoreError::Backend(format!("subdomain {} was given to another device", lease.subdomain)));
            }
            for port in lease.ports.values() {
                let owner = t.ports.get(*port).map_err(backend)?.map(|v| v.value().to_owned());
                if owner.is_some_and(|owner| owner != lease.name) {
                    return Err(StoreError::Backend(format!("port {port} was given to another device")));
                }
            }
            t.subdomains.insert(lease.subdomain.as_str(), lease.name.as_str()).map_err(backend)?;
            for port in lease.ports.values() {
                t.ports.insert(*port, lease.name.as_str()).map_err(backend)?;
            }
            let mut stored = lease.clone();
            // Only the session's own ports are written back: parked ones
            // were not checked above, so they are not claimed.
            stored.parked.clear();
            stored.expires_at_ms = None;
            stored.last_seen_ms = now_ms;
            t.put(&stored)?;
            Ok(stored)
        })
        .await
    }

    async fn leases(&self, now_ms: u64) -> Result<Vec<Lease>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let leases = txn.open_table(LEASES).map_err(backend)?;
            let mut live = Vec::new();
            for row in leases.iter().map_err(backend)? {
                let (_, bytes) = row.map_err(backend)?;
                let lease = decode(bytes.value())?;
                if lease.is_live(now_ms) {
                    live.push(lease);
                }
            }
            Ok(live)
        })
        .await
        .map_err(backend)?
    }

    async fn reserve(&self, name: &str, subdomain: &str, now_ms: u64) -> Result<(), StoreError> {
        let (name, label) = (name.to_owned(), subdomain.to_owned());
        self.write(move |t| {
            let owner = t.reserved.get(label.as_str()).map_err(backend)?.map(|v| v.value().to_owned());
            if owner.is_some_and(|o| o != name) {
                return Err(StoreError::SubdomainTaken(label));
            }
            let holder = t.subdomains.get(label.as_str()).map_err(backend)?.map(|v| v.value().to_owned());
            if let Some(holder) = holder.filter(|h| *h != name) {
                if t.get(&holder)?.is_some_and(|l| l.is_live(now_ms) && l.subdomain == label) {
                    return Err(StoreError::SubdomainTaken(label));
                }
            }
            if let Some(old) = t.reservation(&name)?.filter(|old| *old != label) {
                t.reserved.remove(old.as_str()).map_err(backend)?;
            }
            t.reserved.insert(label.as_str(), name.as_str()).map_err(backend)?;
            t.reservations.insert(name.as_str(), label.as_str()).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn unreserve(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(move |t| {
            let Some(label) = t.reservation(&name)? else { return Ok(false) };
            t.reservations.remove(name.as_str()).map_err(backend)?;
            t.reserved.remove(label.as_str()).map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(RESERVATIONS).map_err(backend)?;
            let mut all = Vec::new();
            for row in table.iter().map_err(backend)? {
                let (name, label) = row.map_err(backend)?;
                all.push(Reservation { name: name.value().to_owned(), subdomain: label.value().to_owned() });
            }
            Ok(all)
        })
        .await
        .map_err(backend)?
    }

    async fn get_blob(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (db, key) = (self.db.clone(), key.to_owned());
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(BLOBS).map_err(backend)?;
            Ok(table.get(key.as_str()).map_err(backend)?.map(|v| v.value().to_vec()))
        })
        .await
        .map_err(backend)?
    }

    async fn put_blob(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (db, key, value) = (self.db.clone(), key.to_owned(), value.to_vec());
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut table = txn.open_table(BLOBS).map_err(backend)?;
                match value.is_empty() {
                    true => table.remove(key.as_str()).map_err(backend)?.map(drop),
                    false => table.insert(key.as_str(), value.as_slice()).map_err(backend)?.map(drop),
                };
            }
            txn.commit().map_err(backend)
        })
        .await
        .map_err(backend)?
    }

    async fn blob_or_insert(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (db, key, value) = (self.db.clone(), key.to_owned(), value.to_vec());
        tokio::task::spawn_blocking(move || {
            // One write transaction: redb runs them one at a time.
            let txn = db.begin_write().map_err(backend)?;
            let stored = {
                let mut table = txn.open_table(BLOBS).map_err(backend)?;
                let existing = table.get(key.as_str()).map_err(backend)?.map(|v| v.value().to_vec());
                match existing {
                    Some(existing) => existing,
                    None => {
                        table.insert(key.as_str(), value.as_slice()).map_err(backend)?;
                        value
                    }
                }
            };
            txn.commit().map_err(backend)?;
            Ok(stored)
        })
        .await
        .map_err(backend)?
    }
}

/// A [`Claim`] that owns its strings, to cross into the blocking pool.
struct OwnedClaim {
    name: String,
    services: Vec<String>,
    session: String,
    node: String,
    now_ms: u64,
    grace_ms: u64,
    port_range: RangeInclusive<u16>,
}

impl OwnedClaim {
    fn as_claim(&self) -> Claim<'_> {
        Claim {
            name: &self.name,
            services: &self.services,
            session: &self.session,
            node: &self.node,
            now_ms: self.now_ms,
            grace_ms: self.grace_ms,
            port_range: self.port_range.clone(),
        }
    }
}

impl From<&Claim<'_>> for OwnedClaim {
    fn from(c: &Claim<'_>) -> Self {
        Self {
            name: c.name.to_owned(),
            services: c.services.to_vec(),
            session: c.session.to_owned(),
            node: c.node.to_owned(),
            now_ms: c.now_ms,
            grace_ms: c.grace_ms,
            port_range: c.port_range.clone(),
        }
    }
}

fn decode(bytes: &[u8]) -> Result<Lease, StoreError> {
    serde_json::from_slice(bytes).map_err(backend)
}

/// The writer thread: runs the queued writes in batches of up to
/// [`MAX_BATCH`], then one durable (fsync'd) commit, then the answers.
fn write_batches(db: &std::sync::Weak<Database>, queue: &std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        // A job comes from a live store, which holds the database.
        let Some(db) = db.upgrade() else { return };
        let mut replies = vec![first(&db)];
        while replies.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => replies.push(job(&db)),
                Err(_) => break,
            }
        }
        let flushed = (|| {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
            Ok::<_, Box<dyn std::error::Error>>(())
        })();
        let failed = flushed.err().map(|e| format!("durable commit: {e}"));
        if let Some(e) = &failed {
            tracing::error!(error = %e, writes = replies.len(), "store commit failed");
        }
        // Let go of the database before anyone is answered: the last answer
        // may let the store close, and a restart open the file again at once.
        drop(db);
        for reply in replies {
            reply(failed.clone());
        }
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}
