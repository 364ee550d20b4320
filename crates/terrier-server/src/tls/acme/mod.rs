//! Automatic certificates by ACME (RFC 8555) for the apex domain and the
//! device subdomains listed in `tls.acme.names`, validated by TLS-ALPN-01 on
//! the TLS listener itself (no port 80 needed).
//!
//! Each node runs [`run`]: at start and every `check_interval`, for each
//! name, it loads the certificate from the store into [`Issued`] (which the
//! SNI resolver reads), and orders a new one when it is missing or has less
//! than `renew_before` left. The account, the certificates and the pending
//! challenges live in the store, so all nodes of a cluster share them and a
//! restart re-issues nothing. See docs/ACME.md.

pub mod challenge;
pub mod config;
pub mod order;
pub mod stored;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::sign::CertifiedKey;

pub use config::AcmeConfig;
use stored::{LoadedCert, OrderLock, StoredCert};
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::store::Store;

/// The ACME certificates this node serves, by name; filled by [`run`], read
/// on every handshake.
#[derive(Debug)]
pub struct Issued {
    /// The domain, answered for clients that send no SNI.
    apex: String,
    certs: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Issued {
    /// An empty set, when `[tls.acme]` is configured.
    pub fn for_config(config: &crate::ServerConfig) -> Option<Arc<Self>> {
        let apex = config.domain.clone();
        config.tls.acme.as_ref().map(|_| Arc::new(Self { apex, certs: RwLock::default() }))
    }

    /// The apex domain.
    pub fn apex(&self) -> &str {
        &self.apex
    }

    /// The certificate for `name`, once issued.
    pub fn get(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.certs.read().expect("issued lock").get(name).cloned()
    }

    fn set(&self, name: &str, key: Arc<CertifiedKey>) {
        self.certs.write().expect("issued lock").insert(name.to_owned(), key);
    }
}

/// Where this node orders certificates: the shared store (certificates,
/// order locks, the account) and its id (which node holds an order lock).
pub struct Orders {
    /// The cluster's store.
    pub store: Arc<dyn Store>,
    /// This node's id.
    pub node_id: String,
}

/// Keeps every configured name of `server` certified until `shutdown`.
pub async fn run(orders: Orders, server: Arc<ServerConfig>, issued: Arc<Issued>, shutdown: CancellationToken) {
    let Some(config) = server.tls.acme.clone() else { return };
    let names = config.all_names(&server.domain);
    let mut account = None;
    let mut ticker = tokio::time::interval(config.check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        for name in &names {
            let checked = tokio::select! {
                () = shutdown.cancelled() => return,
                checked = tokio::time::timeout(config.order_timeout, check(&orders, &config, &issued, &mut account, name)) => checked,
            };
            match checked {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(
                    name,
                    error = format!("{e:#}"),
                    "ACME certificate not obtained; retrying at the next check"
                ),
                Err(_) => {
                    tracing::warn!(name, timeout = ?config.order_timeout, "ACME order took too long; retrying at the next check")
                }
            }
        }
    }
}

/// Serves the stored certificate of `name` and renews it if due.
async fn check(
    orders: &Orders,
    config: &AcmeConfig,
    issued: &Issued,
    account: &mut Option<instant_acme::Account>,
    name: &str,
) -> anyhow::Result<()> {
    let now = crate::store::now_ms();
    let stored = StoredCert::get(&*orders.store, name).await?.filter(|s| s.directory == config.directory_url);
    let loaded = match stored.map(|s| s.load()).transpose() {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(name, error = %e, "stored ACME certificate unusable; ordering a new one");
            None
        }
    };
    if let Some(loaded) = &loaded {
        issued.set(name, loaded.key.clone());
        if !loaded.needs_renewal((now / 1000) as i64, config.renew_before) {
            return Ok(());
        }
    }
    let hold_ms = config.order_timeout.as_millis() as u64;
    if !OrderLock::take(&*orders.store, name, &orders.node_id, now, hold_ms).await? {
        tracing::debug!(name, "another node is ordering this certificate");
        return Ok(());
    }
    let ordered = order_one(orders, config, account, name).await;
    if let Err(e) = OrderLock::release(&*orders.store, name).await {
        tracing::warn!(name, error = %e, "could not release the ACME order lock");
    }
    let (stored, fresh) = ordered?;
    stored.put(&*orders.store, name).await?;
    issued.set(name, fresh.key.clone());
    let renewed = loaded.is_some();
    tracing::info!(name, renewed, not_after = fresh.not_after, "ACME certificate issued");
    Ok(())
}

async fn order_one(
    orders: &Orders,
    config: &AcmeConfig,
    account: &mut Option<instant_acme::Account>,
    name: &str,
) -> anyhow::Result<(StoredCert, LoadedCert)> {
    let acct = match account {
        Some(acct) => acct.clone(),
        None => account.insert(order::account(&*orders.store, config).await?).clone(),
    };
    match order::issue(&*orders.store, &acct, config, name).await {
        Ok(stored) => {
            let loaded = stored.load()?;
            Ok((stored, loaded))
        }
        Err(e) => {
            // An account the CA no longer knows is registered afresh next time.
            if format!("{e:#}").contains("accountDoesNotExist") {
                order::forget_account(&*orders.store, config).await?;
            }
            *account = None;
            Err(e)
        }
    }
}
