//! The node registry loop and least-loaded balancing.
//!
//! Every `cluster.heartbeat_interval` a node registers itself (id, URLs,
//! online devices) under a TTL of `cluster.node_ttl`, reads the live nodes
//! (kept in memory for handshakes to consult without a store round trip),
//! recovers the leases of nodes whose registration expired (their devices
//! get their grace period), and, when it finds itself missing from the
//! registry (the store lost its data), writes its online leases back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::live::Live;
use crate::store::{now_ms, Lease, NodeInfo, Online, Store};
use crate::tunnel::registry::Registry;
use crate::tunnel::session::Session;

/// This node's place in the cluster: its id, its registration and leases in
/// the shared store, and what it knows of the other nodes.
pub struct Membership {
    /// This node's id (in leases, logs).
    pub node_id: String,
    /// Leases, indexes and the node registry.
    pub store: Arc<dyn Store>,
    /// Devices online on this node (their count is announced; their leases
    /// are written back after a store failure).
    pub sessions: Arc<Registry>,
    /// The grace period in force for releases.
    pub live: Arc<Live>,
    /// `cluster.*` settings and the URLs this node announces.
    pub config: Arc<ServerConfig>,
    /// Live nodes of the cluster (just this one with the embedded store).
    pub peers: Peers,
    /// Set while the store may not reflect this node's sessions (after a
    /// store failure, or when the registry lost this node); the heartbeat
    /// then resyncs before registering.
    needs_resync: AtomicBool,
    /// Lease releases that failed while the store was away, to retry.
    unreleased: Mutex<Vec<Unreleased>>,
}

impl Membership {
    /// Node `node_id` on `store`, serving `sessions`; not registered yet.
    pub fn new(
        node_id: String,
        store: Arc<dyn Store>,
        sessions: Arc<Registry>,
        live: Arc<Live>,
        config: Arc<ServerConfig>,
    ) -> Self {
        Self {
            node_id,
            store,
            sessions,
            live,
            config,
            peers: Peers::default(),
            needs_resync: AtomicBool::new(false),
            unreleased: Mutex::default(),
        }
    }
}

/// The live nodes as last read from the store.
#[derive(Default)]
pub struct Peers {
    /// Last successful read; empty until the first heartbeat.
    nodes: RwLock<Vec<NodeInfo>>,
}

impl Peers {
    /// The node `id`, if it is live.
    pub fn get(&self, id: &str) -> Option<NodeInfo> {
        self.nodes.read().expect("peers lock").iter().find(|n| n.id == id).cloned()
    }

    fn set(&self, nodes: Vec<NodeInfo>) {
        *self.nodes.write().expect("peers lock") = nodes;
    }
}

/// Where a new device should go instead of `node`, if anywhere: the least
/// loaded live node, when this one has more than `balance_tolerance` devices
/// beyond it. Reads the registry fresh (handshakes are rare next to
/// traffic); if the store cannot answer, the device stays here.
pub async fn redirect_target(node: &Membership) -> Option<NodeInfo> {
    let nodes = node.store.nodes().await.ok()?;
    node.peers.set(nodes.clone());
    let mine = node.sessions.len() as u64;
    // A node that missed two heartbeats is probably dead even if its
    // registration has not expired yet: never send devices there.
    let fresh_after = now_ms().saturating_sub(2 * node.config.cluster.heartbeat_interval.as_millis() as u64);
    let least =
        nodes.into_iter().filter(|n| n.id != node.node_id && n.updated_ms >= fresh_after).min_by_key(|n| n.devices)?;
    (mine > least.devices + node.config.cluster.balance_tolerance).then_some(least)
}

/// The live node `id`: from the last registry read, or read fresh when it
/// is not there (it may have joined since).
pub async fn peer(node: &Membership, id: &str) -> Option<NodeInfo> {
    if let Some(peer) = node.peers.get(id) {
        return Some(peer);
    }
    let nodes = node.store.nodes().await.ok()?;
    node.peers.set(nodes);
    node.peers.get(id)
}

/// A lease release that failed (store unreachable), to retry.
#[derive(Debug, Clone)]
pub struct Unreleased {
    /// Device name.
    pub name: String,
    /// The session that ended.
    pub session: String,
    /// When it ended, Unix ms: the grace period counts from here.
    pub at_ms: u64,
}

/// Refreshes this node's registration now (its device count changed), so
/// other nodes balance on fresh numbers. Failures wait for the heartbeat.
pub async fn announce(node: &Membership) {
    // Registering now would hide from the heartbeat that the store lost (or
    // missed) this node's leases; it re-registers after the resync.
    if node.needs_resync.load(Ordering::Acquire) {
        return;
    }
    if let Err(e) = register(node).await {
        tracing::debug!(error = %e, "registration refresh failed");
    }
}

/// Registers this node under its TTL. Start-up calls it before serving,
/// after recovering the node's old leases: no session exists yet, so there
/// is nothing to resync, and devices that connect in the first milliseconds
/// (all of them, after a restart) are not written twice.
pub async fn register(node: &Membership) -> Result<(), crate::store::StoreError> {
    node.store.register_node(&info(node), node.config.cluster.node_ttl.as_millis() as u64).await
}

/// This node as the registry shows it.
fn info(node: &Membership) -> NodeInfo {
    NodeInfo {
        id: node.node_id.clone(),
        advertise_url: node.config.advertise_url(),
        internal_url: node.config.internal_url(),
        devices: node.sessions.len() as u64,
        updated_ms: now_ms(),
    }
}

/// Runs the registry heartbeat until `shutdown`.
pub async fn heartbeat(node: Arc<Membership>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(node.config.cluster.heartbeat_interval);
    let mut healthy = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match beat(&node).await {
            Ok(()) if !healthy => {
                tracing::info!("store reachable again; registration and leases re-synced");
                healthy = true;
            }
            Ok(()) => {}
            Err(e) => {
                // Whatever changed meanwhile (releases, a Redis restart), the
                // store must be brought up to date before trusting it again.
                node.needs_resync.store(true, Ordering::Release);
                if healthy {
                    tracing::error!(error = %e, "store unreachable: online tunnels keep working, new devices get 503");
                }
                healthy = false;
            }
        }
    }
}

async fn beat(node: &Membership) -> Result<(), crate::store::StoreError> {
    let ttl = node.config.cluster.node_ttl.as_millis() as u64;
    let before = node.store.nodes().await?;
    let known = before.iter().any(|n| n.id == node.node_id) && !node.needs_resync.load(Ordering::Acquire);
    let grace = node.live.grace_period().as_millis() as u64;
    // Resync before registering: if it fails half-way, the node is still
    // unknown at the next beat and tries again.
    if !known {
        node.needs_resync.store(true, Ordering::Release);
        resync(node, grace).await?;
        node.needs_resync.store(false, Ordering::Release);
    }
    node.store.register_node(&info(node), ttl).await?;
    retry_releases(node, grace).await?;
    close_moved_sessions(node).await?;
    for dead in node.store.dead_nodes().await? {
        if dead != node.node_id {
            let n = node.store.recover_node(&dead, now_ms(), grace).await?;
            tracing::warn!(node = %dead, devices = n, "node stopped refreshing; its devices are offline");
        }
    }
    node.peers.set(node.store.nodes().await?);
    Ok(())
}

/// Closes local sessions whose lease another session took (the device
/// connected again elsewhere, e.g. through another node): visitors arriving
/// here must not reach the old, probably half-dead, socket.
///
/// A live session whose lease is merely offline gets it back instead: a
/// recovery (a resync at start, or another node declaring this one dead)
/// that ran while the session's handshake was between its claim and the
/// registry marked it offline, though the device never left.
async fn close_moved_sessions(node: &Membership) -> Result<(), crate::store::StoreError> {
    let sessions = node.sessions.all();
    let names: Vec<String> = sessions.iter().map(|s| s.name.clone()).collect();
    let holders = node.store.holders(&names).await?;
    for (session, holder) in sessions.iter().zip(holders) {
        if holder.as_deref() == Some(session.id.as_str()) || session.closed.is_cancelled() {
            continue;
        }
        if holder.is_none() {
            let now = now_ms();
            let restored = node.store.restore(&lease_of(node, session, now), now).await;
            if restored.is_ok_and(|stored| stored.online.as_ref().is_some_and(|o| o.session == session.id)) {
                tracing::info!(device = %session.name, session = %session.id, "lease was marked offline under a live session; restored");
                continue;
            }
        }
        tracing::info!(device = %session.name, session = %session.id, "lease moved to another session; closing this one");
        session.close(terrier_proto::handshake::close::REPLACED);
    }
    Ok(())
}

/// Releases `session`'s lease into its grace period (the session ended);
/// a release the store refuses is retried by the heartbeat. Then announces
/// the new device count.
pub async fn release(node: &Membership, session: &Session) {
    let grace = node.live.grace_period().as_millis() as u64;
    let now = now_ms();
    if let Err(e) = node.store.release(&session.name, &session.id, now, grace).await {
        tracing::error!(error = %e, "could not release lease; will retry");
        node.unreleased.lock().expect("unreleased lock").push(Unreleased {
            name: session.name.clone(),
            session: session.id.clone(),
            at_ms: now,
        });
    }
    announce(node).await;
}

/// Retries releases that failed while the store was unreachable, so no
/// lease is left claiming a device that went away meanwhile.
async fn retry_releases(node: &Membership, grace: u64) -> Result<(), crate::store::StoreError> {
    let pending = std::mem::take(&mut *node.unreleased.lock().expect("unreleased lock"));
    for (i, r) in pending.iter().enumerate() {
        if let Err(e) = node.store.release(&r.name, &r.session, r.at_ms, grace).await {
            node.unreleased.lock().expect("unreleased lock").extend_from_slice(&pending[i..]);
            return Err(e);
        }
    }
    Ok(())
}

/// The registry had forgotten this node (its TTL ran out while the store
/// was unreachable, or the store lost its data): mark every lease the store
/// still thinks is online here offline, then write back the leases of the
/// sessions that really are. A session whose lease now belongs to another
/// session (or whose addresses went to another device) is closed, so its
/// agent reconnects and learns where it stands.
async fn resync(node: &Membership, grace: u64) -> Result<(), crate::store::StoreError> {
    let now = now_ms();
    node.store.recover_node(&node.node_id, now, grace).await?;
    let sessions = node.sessions.all();
    for session in sessions {
        match node.store.restore(&lease_of(node, &session, now), now).await {
            Ok(stored) if stored.online.as_ref().is_some_and(|o| o.session == session.id) => {}
            Ok(_) => {
                tracing::info!(device = %session.name, "lease taken by another session while the store was away");
                session.close(terrier_proto::handshake::close::REPLACED);
            }
            Err(e) => {
                tracing::warn!(device = %session.name, error = %e, "lease could not be restored; asking the device to reconnect");
                session.close(terrier_proto::handshake::close::GOING_AWAY);
            }
        }
    }
    Ok(())
}

fn lease_of(node: &Membership, session: &Session, now: u64) -> Lease {
    Lease {
        name: session.name.clone(),
        subdomain: session.subdomain.clone(),
        ports: session.tcp.clone(),
        parked: Default::default(),
        online: Some(Online { session: session.id.clone(), node: node.node_id.clone(), since_ms: session.since_ms }),
        last_seen_ms: now,
        expires_at_ms: None,
    }
}
