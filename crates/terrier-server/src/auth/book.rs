//! The node's view of device tokens: a cache of the token store, checked on
//! every control and data handshake without a store round trip, refreshed
//! when the store's version changes (polled every `auth.refresh_interval`,
//! and checked at once when an unknown token id is presented, so a token
//! works the moment `token create` returns).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use http::HeaderMap;

use super::store::TokenStore;
use super::token::{self, Kind, Scope, TokenRecord};
use crate::store::StoreError;

/// Why a handshake is not authenticated; each is a 401 with this text,
/// except a store failure (503).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing credentials: send Authorization: Bearer <device token> (terrier --token-file)")]
    Missing,
    /// Not a terrier token, or no such token (revoked or never made).
    #[error("invalid or revoked device token")]
    Invalid,
    /// The token passed its expiry.
    #[error("device token expired")]
    Expired,
    /// A valid token used for a name outside its scope.
    #[error("this token may not register device {name:?} (it is for {scope})")]
    WrongName {
        /// Name asked for.
        name: String,
        /// What the token allows.
        scope: Scope,
    },
    /// A fleet token already has its most devices online on this node.
    #[error("token {0} has the most devices online it may have (limits.max_devices_per_token)")]
    TooManyDevices(String),
    /// The token store could not be read.
    #[error("token store unavailable: {0}")]
    Store(#[from] StoreError),
    /// A visitor token presented by an agent.
    #[error("this is a visitor token (terrierd token create --visitors): it registers no device")]
    VisitorToken,
}

impl AuthError {
    /// The handshake status: 401, except for limits (429) and a token store
    /// that cannot be read (503, the device should retry).
    pub fn status(&self) -> u16 {
        use terrier_proto::handshake::status;
        match self {
            AuthError::TooManyDevices(_) => status::TOO_MANY_REQUESTS,
            AuthError::Store(_) => status::UNAVAILABLE,
            _ => status::UNAUTHORIZED,
        }
    }
}

/// Token cache plus the per-token count of devices online on this node.
pub struct TokenBook {
    store: Arc<dyn TokenStore>,
    cache: RwLock<Cache>,
    online: Arc<Mutex<HashMap<String, usize>>>,
}

#[derive(Default)]
struct Cache {
    version: Option<u64>,
    by_id: HashMap<String, TokenRecord>,
}

/// Holds one device's place in its token's online count; dropping it (when
/// the session ends) gives the place back.
pub struct TokenSlot {
    /// Id of the token the session authenticated with.
    pub token_id: String,
    /// A fleet (prefix) token: it may not take over a name another token holds.
    pub fleet: bool,
    online: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for TokenSlot {
    fn drop(&mut self) {
        let mut online = self.online.lock().expect("online lock");
        if let Some(count) = online.get_mut(&self.token_id) {
            *count -= 1;
            if *count == 0 {
                online.remove(&self.token_id);
            }
        }
    }
}

/// The bearer credential of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let (scheme, credential) = crate::access::authorization(headers.get(http::header::AUTHORIZATION)?)?;
    scheme.eq_ignore_ascii_case("bearer").then_some(credential)
}

impl TokenBook {
    /// A book over `store`; call [`TokenBook::refresh`] once before use.
    pub fn new(store: Arc<dyn TokenStore>) -> Self {
        Self { store, cache: RwLock::default(), online: Arc::default() }
    }

    /// The store behind the book (for create/list/revoke).
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// Reloads the cache if the store changed; returns the ids that are gone
    /// (revoked), whose devices must be disconnected.
    pub async fn refresh(&self) -> Result<Vec<String>, StoreError> {
        let version = self.store.version().await?;
        if self.cache.read().expect("cache lock").version == Some(version) {
            return Ok(Vec::new());
        }
        let records = self.store.load().await?;
        let fresh: HashMap<String, TokenRecord> = records.into_iter().map(|r| (r.id.clone(), r)).collect();
        let mut cache = self.cache.write().expect("cache lock");
        let gone = cache.by_id.keys().filter(|id| !fresh.contains_key(*id)).cloned().collect();
        *cache = Cache { version: Some(version), by_id: fresh };
        Ok(gone)
    }

    /// Checks the bearer token of a control handshake for device `name` and
    /// takes a place in its online count, of which a fleet token has at most
    /// `max_devices_per_token`. The second value lists revoked token ids
    /// noticed on the way (see [`TokenBook::refresh`]).
    pub async fn admit(
        &self,
        headers: &HeaderMap,
        name: &str,
        max_devices_per_token: usize,
    ) -> (Result<TokenSlot, AuthError>, Vec<String>) {
        let (record, gone) = match self.lookup(headers).await {
            (Ok(record), gone) => (record, gone),
            (Err(e), gone) => return (Err(e), gone),
        };
        if record.kind != Kind::Device {
            return (Err(AuthError::VisitorToken), gone);
        }
        if !record.scope.allows(name) {
            return (Err(AuthError::WrongName { name: name.into(), scope: record.scope }), gone);
        }
        let mut online = self.online.lock().expect("online lock");
        let count = online.entry(record.id.clone()).or_default();
        if matches!(record.scope, Scope::Prefix(_)) && *count >= max_devices_per_token {
            return (Err(AuthError::TooManyDevices(record.id)), gone);
        }
        *count += 1;
        let fleet = matches!(record.scope, Scope::Prefix(_));
        (Ok(TokenSlot { token_id: record.id, fleet, online: self.online.clone() }), gone)
    }

    /// Checks the bearer token of a data handshake; returns its id, which
    /// must be the id its session was admitted with.
    pub async fn verify(&self, headers: &HeaderMap) -> Result<String, AuthError> {
        match self.lookup(headers).await.0? {
            record if record.kind == Kind::Device => Ok(record.id),
            _ => Err(AuthError::VisitorToken),
        }
    }

    /// The id of the visitor token `token` when it may visit device `name`
    /// now. Reads only the cache, which the watch refreshes every
    /// `auth.refresh_interval`: a visitor's made-up token never reaches the
    /// store.
    pub fn visitor(&self, token: &str, name: &str) -> Option<String> {
        let (id, secret) = token::split(token)?;
        let cache = self.cache.read().expect("cache lock");
        let record = cache.by_id.get(id)?;
        let fits = record.kind == Kind::Visitor && record.scope.allows(name);
        (fits && token::secret_matches(record, secret) && !record.is_expired(crate::store::now_ms()))
            .then(|| record.id.clone())
    }

    async fn lookup(&self, headers: &HeaderMap) -> (Result<TokenRecord, AuthError>, Vec<String>) {
        let Some(credential) = bearer(headers) else {
            return (Err(AuthError::Missing), Vec::new());
        };
        let Some((id, secret)) = token::split(credential) else {
            return (Err(AuthError::Invalid), Vec::new());
        };
        let mut gone = Vec::new();
        // An unknown id costs one cheap version check (a stat, or one Redis
        // GET); the store is only re-read when it changed. Strangers spraying
        // made-up tokens are held back by the per-IP handshake limit.
        if !self.known(id) {
            match self.refresh().await {
                Ok(ids) => gone = ids,
                Err(e) => return (Err(e.into()), gone),
            }
        }
        let record = self.cache.read().expect("cache lock").by_id.get(id).cloned();
        match record {
            Some(record) if token::secret_matches(&record, secret) => match record.is_expired(crate::store::now_ms()) {
                true => (Err(AuthError::Expired), gone),
                false => (Ok(record), gone),
            },
            _ => (Err(AuthError::Invalid), gone),
        }
    }

    fn known(&self, id: &str) -> bool {
        self.cache.read().expect("cache lock").by_id.contains_key(id)
    }
}
