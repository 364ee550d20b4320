//! TLS-ALPN-01 (RFC 8737): the CA validates a name by opening a TLS
//! connection to it on port 443 with ALPN `acme-tls/1` and checking that the
//! certificate it gets carries the key authorization's digest.
//!
//! The challenge certificate is put in the store, not kept in memory, so
//! whichever node of a cluster the CA's connection reaches can answer it.
//! Only names this server certifies are looked up, so a stranger offering
//! `acme-tls/1` costs at most one store read.

use std::sync::Arc;

use anyhow::Context;
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::StartHandshake;

use crate::config::ServerConfig;
use crate::store::Store;

/// The ALPN protocol id of TLS-ALPN-01 validation.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Store key of the challenge certificate for `name`.
pub fn challenge_key(name: &str) -> String {
    format!("acme/challenge/{name}")
}

/// A self-signed certificate for one validation, as stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChallengeCert {
    /// Certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl ChallengeCert {
    /// Makes the certificate for `name` carrying the SHA-256 `digest` of the
    /// key authorization in the critical acmeIdentifier extension.
    pub fn new(name: &str, digest: &[u8]) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        let mut extension = CustomExtension::new_acme_identifier(digest);
        extension.set_criticality(true);
        params.custom_extensions = vec![extension];
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_der: cert.der().to_vec(), key_der: key.serialize_der() })
    }

    /// Publishes it for `name`, for every node to answer with.
    pub async fn publish(&self, store: &dyn Store, name: &str) -> anyhow::Result<()> {
        Ok(store.put_blob(&challenge_key(name), &serde_json::to_vec(self)?).await?)
    }

    /// Removes the published challenge of `name`.
    pub async fn withdraw(store: &dyn Store, name: &str) -> anyhow::Result<()> {
        Ok(store.put_blob(&challenge_key(name), b"").await?)
    }

    async fn fetch(store: &dyn Store, name: &str) -> anyhow::Result<Option<Self>> {
        match store.get_blob(&challenge_key(name)).await? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).context("corrupt challenge record")?)),
            None => Ok(None),
        }
    }

    /// A TLS configuration that presents this certificate on `acme-tls/1` only.
    /// (Not `with_single_cert`: rustls would refuse the critical acmeIdentifier
    /// extension it does not know.)
    fn server_config(self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = super::super::provider();
        let key = PrivateKeyDer::try_from(self.key_der).map_err(anyhow::Error::msg)?;
        let signing = provider.key_provider.load_private_key(key)?;
        let certified = Arc::new(CertifiedKey::new(vec![CertificateDer::from(self.cert_der)], signing));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Always(certified)));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Resolves every handshake to the one challenge certificate.
#[derive(Debug)]
struct Always(Arc<CertifiedKey>);

impl ResolvesServerCert for Always {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Is this ClientHello an ACME validation (it offers only `acme-tls/1`)?
pub fn is_validation(hello: &ClientHello<'_>) -> bool {
    hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
}

/// Answers a TLS-ALPN-01 validation for `name` with its published
/// challenge certificate, then closes; no HTTP is served on it.
pub async fn answer<IO>(store: &dyn Store, server: &ServerConfig, start: StartHandshake<IO>, name: Option<&str>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let Some(acme) = &server.tls.acme else { return };
    let Some(name) = name.filter(|n| acme.all_names(&server.domain).iter().any(|ours| ours == n)) else {
        return tracing::debug!(sni = ?name, "acme-tls/1 for a name this server does not certify");
    };
    let config = match ChallengeCert::fetch(store, name).await.and_then(|c| c.map(|c| c.server_config()).transpose()) {
        Ok(Some(config)) => config,
        Ok(None) => return tracing::debug!(name, "acme-tls/1 with no challenge pending"),
        Err(e) => return tracing::warn!(name, error = %e, "acme-tls/1 challenge unavailable"),
    };
    match start.into_stream(config).await {
        Ok(mut tls) => {
            tracing::info!(name, "answered an ACME TLS-ALPN-01 validation");
            let _ = tls.shutdown().await;
        }
        Err(e) => tracing::debug!(name, error = %e, "ACME validation handshake failed"),
    }
}
