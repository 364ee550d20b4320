//! Who may connect as a device: the auth mode, device tokens (minted by the
//! operator, stored hashed, bound to a name or a name prefix) and the
//! per-IP handshake limit. Control *and* data sockets present the token;
//! a data socket must present the token its session was admitted with.

pub mod book;
pub mod rate;
pub mod store;
pub mod token;

use std::sync::Arc;

pub use crate::config::AuthMode;
use crate::config::ServerConfig;
use anyhow::Context;
pub use book::{bearer, AuthError, TokenBook, TokenSlot};
use tokio_util::sync::CancellationToken;

/// Opens the token store the configuration names: a file beside the
/// embedded store, or the cluster's Redis.
pub async fn open_token_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn store::TokenStore>> {
    if config.store == "embedded" {
        Ok(Arc::new(store::FileTokenStore::new(&config.data_dir)))
    } else {
        let tokens = store::RedisTokenStore::connect(&config.store, &config.redis_prefix, config.limits.store_timeout)
            .await
            .with_context(|| format!("connecting to {}", crate::config::redact_url(&config.store)))?;
        Ok(Arc::new(tokens))
    }
}

/// The node's authentication state.
pub struct Auth {
    /// The mode in force (`auto` already resolved).
    pub mode: AuthMode,
    /// Device tokens (kept even in `open` mode, so tokens can be minted
    /// ahead of switching to `token`).
    pub book: TokenBook,
    /// Control handshakes per source IP.
    pub handshakes: rate::HandshakeLimiter,
    /// Disconnects the devices online with any of the given token ids
    /// (found revoked).
    on_revoked: Revoker,
}

/// What [`Auth`] calls with token ids found revoked.
pub type Revoker = Box<dyn Fn(&[String]) + Send + Sync>;

/// Who a session is: admitted without credentials (`open`), or with a
/// token whose online place it holds.
pub enum Identity {
    /// Open mode: no credential checked.
    Open,
    /// Admitted with a device token.
    Token(TokenSlot),
}

impl Identity {
    /// The token id, if admitted with one.
    pub fn token_id(&self) -> Option<&str> {
        match self {
            Identity::Open => None,
            Identity::Token(slot) => Some(&slot.token_id),
        }
    }
}

impl Auth {
    /// Opens the token store and loads it once, so a bad store fails the start.
    /// `on_revoked` disconnects the devices online with revoked tokens.
    pub async fn start(config: &ServerConfig, on_revoked: Revoker) -> anyhow::Result<Self> {
        let mode = config.auth.mode.resolve(&config.domain);
        let book = TokenBook::new(open_token_store(config).await?);
        book.refresh().await.context("loading device tokens")?;
        if mode == AuthMode::Open {
            tracing::warn!(
                "auth.mode is open: ANYONE who reaches this server can register ANY device name. \
                 Use it for development only; set auth.mode = \"token\" and mint tokens with `terrierd token create`"
            );
        }
        Ok(Self {
            mode,
            book,
            handshakes: rate::HandshakeLimiter::new(config.limits.control_handshakes_per_ip_per_minute),
            on_revoked,
        })
    }

    /// Checks a control handshake's credential for device `name`, with at
    /// most `max_devices` online per token; disconnects devices whose
    /// tokens turned out revoked on the way.
    pub async fn admit(
        &self,
        headers: &http::HeaderMap,
        name: &str,
        max_devices: usize,
    ) -> Result<Identity, AuthError> {
        if self.mode == AuthMode::Open {
            return Ok(Identity::Open);
        }
        let (result, gone) = self.book.admit(headers, name, max_devices).await;
        self.disconnect_revoked(&gone);
        result.map(Identity::Token)
    }

    /// Checks a data handshake's credential against its session's token.
    pub async fn verify_data(&self, headers: &http::HeaderMap, session_token: Option<&str>) -> Result<(), AuthError> {
        let Some(expected) = session_token else {
            return Ok(());
        };
        match self.book.verify(headers).await? {
            id if id == expected => Ok(()),
            _ => Err(AuthError::Invalid),
        }
    }

    /// Closes the sessions admitted with any of the `revoked` token ids.
    fn disconnect_revoked(&self, revoked: &[String]) {
        if !revoked.is_empty() {
            (self.on_revoked)(revoked);
        }
    }
}

/// Visitor tokens come from the same book as device tokens, in every
/// `auth.mode` (visitor access does not depend on how devices register).
impl crate::access::StoredTokens for Auth {
    fn visitor(&self, token: &str, name: &str) -> Option<String> {
        self.book.visitor(token, name)
    }

    fn is_stored_form(&self, token: &str) -> bool {
        token::split(token).is_some()
    }
}

/// Polls the token store: new tokens work, revoked ones disconnect their
/// devices, every `refresh_interval` (`auth.refresh_interval`) until
/// `shutdown`.
pub async fn watch(auth: Arc<Auth>, refresh_interval: std::time::Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(refresh_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match auth.book.refresh().await {
            Ok(gone) => auth.disconnect_revoked(&gone),
            Err(e) => tracing::warn!(error = %e, "could not refresh device tokens; keeping the last known set"),
        }
        ticks += 1;
        if ticks.is_multiple_of(60) {
            auth.handshakes.forget_idle();
        }
    }
}
