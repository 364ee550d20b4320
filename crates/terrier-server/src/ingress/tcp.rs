//! Public TCP ports: one listener per leased port, relaying each accepted
//! connection raw to the device's service through a tunnel stream.
//!
//! A listener lives as long as the lease, not the session: while a device is
//! away inside its grace period the port stays bound (nobody else can take
//! it), and visitors are simply closed until the device is back. The same
//! holds for a parked port, whose service the online session did not
//! announce: bound, and its visitors closed, until the service comes back
//! or its time runs out.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use terrier_transport::tcp::ListenerTuning;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::raw::Relays;
use crate::lifecycle::Lifecycle;
use crate::tunnel::registry::Registry;

/// The bound public ports of this node.
pub struct PortListeners {
    /// Port -> who it is bound for.
    bound: Mutex<HashMap<u16, Bound>>,
    /// The address ports are bound on (`tcp_bind`).
    bind: IpAddr,
    /// What the accept loops need.
    accepting: Accepting,
}

/// What a port's accept loop needs; clones share it.
#[derive(Clone)]
struct Accepting {
    /// The devices online here, to find the port's device.
    sessions: Arc<Registry>,
    /// Relays each visitor.
    relays: Relays,
    /// Where the loops and relays run.
    lifecycle: Lifecycle,
}

/// A bound port.
struct Bound {
    /// Device name.
    name: String,
    /// Service id.
    service: String,
    /// Stops the accept loop.
    stop: CancellationToken,
}

impl PortListeners {
    /// No port bound yet; ports will be bound on `bind`, their visitors
    /// relayed to devices of `sessions`.
    pub fn new(bind: IpAddr, sessions: Arc<Registry>, relays: Relays, lifecycle: Lifecycle) -> Self {
        Self { bound: Mutex::default(), bind, accepting: Accepting { sessions, relays, lifecycle } }
    }

    /// Makes sure `port` listens for `name`'s `service`, binding it if needed.
    pub async fn ensure(&self, port: u16, name: &str, service: &str) -> std::io::Result<()> {
        {
            let mut bound = self.bound.lock().expect("ports lock");
            match bound.get(&port) {
                Some(b) if b.name == name && b.service == service => return Ok(()),
                // The store gave the port to us, so any older holder's lease is over.
                Some(_) => {
                    if let Some(old) = bound.remove(&port) {
                        old.stop.cancel();
                    }
                }
                None => {}
            }
        }
        let listener = TcpListener::bind(SocketAddr::new(self.bind, port)).await?;
        let accepting = self.accepting.clone();
        let stop = accepting.lifecycle.shutdown.child_token();
        self.bound
            .lock()
            .expect("ports lock")
            .insert(port, Bound { name: name.to_owned(), service: service.to_owned(), stop: stop.clone() });
        tracing::info!(device = name, service, port, "TCP port bound");
        let (name, service) = (name.to_owned(), service.to_owned());
        self.accepting.lifecycle.tasks.spawn(accept_loop(accepting, listener, name, service, stop));
        Ok(())
    }

    /// Closes the ports of `name` that are not in `keep` (service -> port).
    pub fn retain(&self, name: &str, keep: &BTreeMap<String, u16>) {
        self.bound.lock().expect("ports lock").retain(|port, b| {
            let kept = b.name != name || keep.get(&b.service) == Some(port);
            if !kept {
                tracing::info!(device = name, service = %b.service, port, "TCP port released");
                b.stop.cancel();
            }
            kept
        });
    }

    /// Closes every port of `name` (its lease ended).
    pub fn close_device(&self, name: &str) {
        self.retain(name, &BTreeMap::new());
    }

    /// Closes `port` if it is still bound for `name`'s `service` (its parked
    /// time ran out).
    pub fn close_port(&self, name: &str, service: &str, port: u16) {
        let mut bound = self.bound.lock().expect("ports lock");
        if bound.get(&port).is_some_and(|b| b.name == name && b.service == service) {
            if let Some(b) = bound.remove(&port) {
                tracing::info!(device = name, service, port, "TCP port released");
                b.stop.cancel();
            }
        }
    }
}

async fn accept_loop(
    accepting: Accepting,
    listener: TcpListener,
    name: String,
    service: String,
    stop: CancellationToken,
) {
    let mut tuning = ListenerTuning::default();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, visitor)) => {
                tuning.accepted(&listener, &stream, accepting.relays.live.limits().tcp_keepalive);
                let (a, name, service) = (accepting.clone(), name.clone(), service.clone());
                // The hard stop cuts the relay, as it cuts every connection task.
                accepting
                    .lifecycle
                    .spawn_until_hard_stop(async move { relay_visitor(&a, stream, visitor, &name, &service).await });
            }
            Err(e) => {
                tracing::warn!(device = %name, %service, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Relays one TCP visitor to the device; an offline device, or one whose
/// session did not announce this service (its port is parked), means an
/// immediate close.
async fn relay_visitor(accepting: &Accepting, stream: TcpStream, visitor: SocketAddr, name: &str, service: &str) {
    let Some(session) = accepting.sessions.by_name(name) else {
        tracing::debug!(device = name, service, %visitor, "device offline; closing TCP visitor");
        return;
    };
    if !session.tcp.contains_key(service) {
        tracing::debug!(device = name, service, %visitor, "service not announced; closing TCP visitor");
        return;
    }
    accepting.relays.relay(&session, service, stream, visitor, "TCP port").await;
}
