//! Public TCP ports: one listener per leased port, relaying each accepted
//! connection raw to the device's service through a tunnel stream.
//!
//! A listener lives as long as the lease, not the session: while a device is
//! away inside its grace period the port stays bound (nobody else can take
//! it), and visitors are simply closed until the device is back.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use terrier_transport::tcp::ListenerTuning;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::Node;

/// The bound public ports of this node.
#[derive(Default)]
pub struct PortListeners {
    /// Port -> who it is bound for.
    bound: Mutex<HashMap<u16, Bound>>,
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
    /// Makes sure `port` listens for `name`'s `service`, binding it if needed.
    pub async fn ensure(&self, node: &Arc<Node>, port: u16, name: &str, service: &str) -> std::io::Result<()> {
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
        let listener = TcpListener::bind(SocketAddr::new(node.config.tcp_bind, port)).await?;
        let stop = node.shutdown.child_token();
        self.bound
            .lock()
            .expect("ports lock")
            .insert(port, Bound { name: name.to_owned(), service: service.to_owned(), stop: stop.clone() });
        tracing::info!(device = name, service, port, "TCP port bound");
        let node2 = node.clone();
        let (name, service) = (name.to_owned(), service.to_owned());
        node.tasks.spawn(accept_loop(node2, listener, name, service, stop));
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
}

async fn accept_loop(node: Arc<Node>, listener: TcpListener, name: String, service: String, stop: CancellationToken) {
    let mut tuning = ListenerTuning::default();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, visitor)) => {
                tuning.accepted(&listener, &stream, node.live.limits().tcp_keepalive);
                let node2 = node.clone();
                let (name, service) = (name.clone(), service.clone());
                node.tasks.spawn(async move { relay_visitor(node2, stream, visitor, &name, &service).await });
            }
            Err(e) => {
                tracing::warn!(device = %name, %service, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Relays one TCP visitor to the device; an offline device means an
/// immediate close.
async fn relay_visitor(node: Arc<Node>, stream: TcpStream, visitor: SocketAddr, name: &str, service: &str) {
    let Some(session) = node.sessions.by_name(name) else {
        tracing::debug!(device = name, service, %visitor, "device offline; closing TCP visitor");
        return;
    };
    super::raw::relay(&node, &session, service, stream, visitor, "TCP port").await;
}
