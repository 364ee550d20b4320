//! TLS for the ingress: the rustls server configuration (ring provider,
//! TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`) and where its certificates
//! come from — operator files chosen by SNI ([`sni`]), or a development CA
//! that issues on demand ([`dev_ca`]).

pub mod acme;
pub mod dev_ca;
pub mod sni;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ServerConfig;

/// The one crypto provider of the whole workspace.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls configuration for `tls.listen`, or `None` when TLS
/// is off. Fails with the file and the reason when a certificate or key
/// cannot be used.
pub fn server_config(config: &ServerConfig) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    server_config_with_acme(config, Arc::new(sni::OperatorCerts::load(config)?), None)
}

/// [`server_config`] that also serves the certificates ACME obtains into `acme`.
/// The operator's files come loaded in `keys`, so `SIGHUP` can swap them.
pub fn server_config_with_acme(
    config: &ServerConfig,
    keys: Arc<sni::OperatorCerts>,
    acme: Option<Arc<acme::Issued>>,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    if config.tls.listen.is_none() {
        return Ok(None);
    }
    let provider = provider();
    let dev = match config.tls.self_signed {
        true => {
            let ca = dev_ca::DevCa::load_or_create(&config.data_dir, &config.domain)?;
            tracing::warn!(
                "TLS with generated development certificates: clients must trust {} (terrier --ca, curl --cacert)",
                ca.ca_path.display()
            );
            Some(ca)
        }
        false => None,
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(sni::SniResolver::new(keys, dev).with_acme(acme)));
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(tls)))
}

/// Loads a PEM certificate chain and its private key, checking they match.
pub fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .with_context(|| format!("reading certificates from {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", cert.display());
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading a private key from {}", key.display()))?;
    let certified = CertifiedKey::from_der(chain, key_der, provider)
        .with_context(|| format!("{} and {} do not make a usable pair", cert.display(), key.display()))?;
    Ok(Arc::new(certified))
}
