//! The sessions online on this node, found by name, subdomain or session id.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::session::Session;

/// Online sessions of this node. One lock, held only for map operations.
#[derive(Default)]
pub struct Registry {
    /// The three indexes, always updated together.
    inner: RwLock<Indexes>,
}

#[derive(Default)]
struct Indexes {
    by_name: HashMap<String, Arc<Session>>,
    by_subdomain: HashMap<String, Arc<Session>>,
    by_id: HashMap<String, Arc<Session>>,
}

impl Registry {
    /// Adds a session; returns the session it replaces (same device name).
    pub fn insert(&self, session: Arc<Session>) -> Option<Arc<Session>> {
        let mut idx = self.inner.write().expect("registry lock");
        let old = idx.by_name.insert(session.name.clone(), session.clone());
        if let Some(old) = &old {
            idx.by_id.remove(&old.id);
            idx.by_subdomain.remove(&old.subdomain);
        }
        idx.by_subdomain.insert(session.subdomain.clone(), session.clone());
        idx.by_id.insert(session.id.clone(), session);
        old
    }

    /// Removes `session` if it is still the current one for its name.
    /// Returns whether it was.
    pub fn remove(&self, session: &Session) -> bool {
        let mut idx = self.inner.write().expect("registry lock");
        let current = idx.by_name.get(&session.name).is_some_and(|s| s.id == session.id);
        if current {
            idx.by_name.remove(&session.name);
            idx.by_subdomain.remove(&session.subdomain);
            idx.by_id.remove(&session.id);
        }
        current
    }

    /// The online session serving `subdomain`.
    pub fn by_subdomain(&self, subdomain: &str) -> Option<Arc<Session>> {
        self.inner.read().expect("registry lock").by_subdomain.get(subdomain).cloned()
    }

    /// The online session of device `name`.
    pub fn by_name(&self, name: &str) -> Option<Arc<Session>> {
        self.inner.read().expect("registry lock").by_name.get(name).cloned()
    }

    /// The session with id `id`.
    pub fn by_id(&self, id: &str) -> Option<Arc<Session>> {
        self.inner.read().expect("registry lock").by_id.get(id).cloned()
    }

    /// Every online session (for shutdown and stats).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.inner.read().expect("registry lock").by_name.values().cloned().collect()
    }

    /// Number of online sessions.
    pub fn len(&self) -> usize {
        self.inner.read().expect("registry lock").by_name.len()
    }

    /// Is nobody online?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the sessions admitted with any of the `revoked` token ids.
    pub fn close_revoked(&self, revoked: &[String]) {
        for session in self.all() {
            if session.identity.token_id().is_some_and(|id| revoked.iter().any(|r| r == id)) {
                tracing::warn!(device = %session.name, session = %session.id, "device token revoked; disconnecting");
                session.close(terrier_proto::handshake::close::REVOKED);
            }
        }
    }
}
