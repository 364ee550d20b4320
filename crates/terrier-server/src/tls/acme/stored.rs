//! What the store keeps for ACME, under keys every node of a cluster reads:
//! the account (per CA directory) and one certificate per name.

use std::sync::Arc;

use anyhow::Context;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::store::Store;

/// Store key of the ACME account registered at `directory`.
pub fn account_key(directory: &str) -> String {
    format!("acme/account/{directory}")
}

/// Store key of the certificate of `name`.
pub fn cert_key(name: &str) -> String {
    format!("acme/cert/{name}")
}

/// Store key of the node currently ordering a certificate for `name`.
pub fn lock_key(name: &str) -> String {
    format!("acme/lock/{name}")
}

/// An issued certificate as stored: the chain and its private key, as PEM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCert {
    /// Directory URL of the CA that issued it (a change of CA re-issues).
    pub directory: String,
    /// Certificate chain, leaf first.
    pub chain_pem: String,
    /// The leaf's private key (PKCS#8).
    pub key_pem: String,
}

/// A [`StoredCert`] ready for handshakes.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// Chain and signing key for rustls.
    pub key: Arc<CertifiedKey>,
    /// Start of the leaf's validity, Unix seconds.
    pub not_before: i64,
    /// End of the leaf's validity, Unix seconds.
    pub not_after: i64,
}

impl LoadedCert {
    /// Should the certificate be renewed at `now` (Unix seconds): less than
    /// `renew_before` of its validity is left, or less than half its
    /// lifetime — the cap keeps a `renew_before` longer than the CA's
    /// lifetimes from ordering again at every check.
    pub fn needs_renewal(&self, now: i64, renew_before: std::time::Duration) -> bool {
        let renew_before = i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX);
        let half_life = self.not_after.saturating_sub(self.not_before) / 2;
        self.not_after.saturating_sub(now) < renew_before.min(half_life)
    }
}

impl StoredCert {
    /// Parses the chain and key, checking they make a usable pair.
    pub fn load(&self) -> anyhow::Result<LoadedCert> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.chain_pem.as_bytes()).collect::<Result<_, _>>()?;
        let leaf = chain.first().context("the certificate chain is empty")?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).context("the leaf certificate does not parse")?;
        let (not_before, not_after) =
            (parsed.validity().not_before.timestamp(), parsed.validity().not_after.timestamp());
        let key_der = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).context("no private key")?;
        let key = CertifiedKey::from_der(chain, key_der, &super::super::provider())?;
        Ok(LoadedCert { key: Arc::new(key), not_before, not_after })
    }

    /// The record of `name` in `store`, if any.
    pub async fn get(store: &dyn Store, name: &str) -> anyhow::Result<Option<Self>> {
        match store.get_blob(&cert_key(name)).await? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).context("corrupt stored certificate")?)),
            None => Ok(None),
        }
    }

    /// Saves the record of `name`.
    pub async fn put(&self, store: &dyn Store, name: &str) -> anyhow::Result<()> {
        Ok(store.put_blob(&cert_key(name), &serde_json::to_vec(self)?).await?)
    }
}

/// Who is ordering a name's certificate, so other nodes wait for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderLock {
    /// Node id.
    pub node: String,
    /// When the lock lapses (the order timeout), Unix ms.
    pub until_ms: u64,
}

impl OrderLock {
    /// Takes the lock of `name` for `node` unless another node holds it.
    /// Best effort (read, then write): two nodes racing at the same instant
    /// may both order, which costs one extra certificate, never an outage.
    pub async fn take(store: &dyn Store, name: &str, node: &str, now_ms: u64, hold_ms: u64) -> anyhow::Result<bool> {
        if let Some(bytes) = store.get_blob(&lock_key(name)).await? {
            if let Ok(held) = serde_json::from_slice::<OrderLock>(&bytes) {
                if held.node != node && held.until_ms > now_ms {
                    return Ok(false);
                }
            }
        }
        let lock = OrderLock { node: node.to_owned(), until_ms: now_ms + hold_ms };
        store.put_blob(&lock_key(name), &serde_json::to_vec(&lock)?).await?;
        Ok(true)
    }

    /// Releases the lock of `name`.
    pub async fn release(store: &dyn Store, name: &str) -> anyhow::Result<()> {
        Ok(store.put_blob(&lock_key(name), b"").await?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cert(not_before: i64, not_after: i64) -> LoadedCert {
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf =
            rcgen::CertificateParams::new(vec!["a.test".to_owned()]).expect("params").self_signed(&key).expect("cert");
        let der = PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
        let key =
            CertifiedKey::from_der(vec![leaf.der().clone()], der, &super::super::super::provider()).expect("pair");
        LoadedCert { key: Arc::new(key), not_before, not_after }
    }

    const DAY: i64 = 24 * 3600;

    #[test]
    fn renews_inside_the_window_only() {
        let ninety_days = cert(0, 90 * DAY);
        let thirty = Duration::from_secs(30 * DAY as u64);
        assert!(!ninety_days.needs_renewal(59 * DAY, thirty), "31 days left");
        assert!(ninety_days.needs_renewal(61 * DAY, thirty), "29 days left");
        assert!(ninety_days.needs_renewal(91 * DAY, thirty), "expired");
    }

    #[test]
    fn short_lifetimes_renew_at_half_life_not_at_every_check() {
        let six_days = cert(0, 6 * DAY);
        let thirty = Duration::from_secs(30 * DAY as u64);
        assert!(!six_days.needs_renewal(DAY, thirty), "fresh 6-day certificate renewed at once");
        assert!(six_days.needs_renewal(3 * DAY + 1, thirty), "past half life");
    }
}
