//! TLS for `wss://` servers: rustls with the ring provider, verifying the
//! server against the system's root certificates or, with `--ca FILE`, only
//! against the CAs in that PEM file. There is no way to skip verification.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Which certificates the agent trusts for `wss://` servers.
#[derive(Clone)]
pub struct TlsConfig {
    /// The rustls configuration, built once (loading roots parses ~150 certificates).
    client: Arc<ClientConfig>,
    /// Where the roots came from, for messages: "system roots" or the CA file.
    pub source: String,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").field("source", &self.source).finish()
    }
}

impl TlsConfig {
    /// Trusts only the certificates in the PEM file `path` (a private CA).
    pub fn from_ca_file(path: &Path) -> Result<Self, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("--ca {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--ca {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("--ca {}: no PEM certificate in the file", path.display()));
        }
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|e| format!("--ca {}: {e}", path.display()))?;
        }
        Ok(Self { client: client_config(roots)?, source: path.display().to_string() })
    }

    /// Trusts the operating system's root certificates (loaded once per process).
    pub fn system() -> Result<Self, String> {
        static SYSTEM: OnceLock<Result<TlsConfig, String>> = OnceLock::new();
        SYSTEM.get_or_init(load_system).clone()
    }

    /// The connector for one handshake.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.client.clone())
    }
}

fn load_system() -> Result<TlsConfig, String> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "reading system root certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err("no system root certificates found: install the CA bundle (ca-certificates) \
                    or give --ca FILE"
            .into());
    }
    Ok(TlsConfig { client: client_config(roots)?, source: "system roots".into() })
}

fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Why a TLS handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The server answered the TLS hello with something that is not TLS
    /// (typically an HTTP error page): the URL should be http:// or ws://.
    NotTls,
    /// Any other failure (certificate, name, protocol), in words.
    Failed(String),
}

/// Runs the TLS handshake for `host` over `stream` (a TCP connection or a
/// proxy tunnel), verifying the certificate chain and the name.
pub async fn handshake(tls: &TlsConfig, host: &str, stream: TcpStream) -> Result<TlsStream<TcpStream>, TlsError> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| TlsError::Failed(format!("{host:?} is not a TLS server name: {e}")))?;
    tls.connector().connect(name, stream).await.map_err(|e| explain(e, &tls.source))
}

/// A handshake error in words a field technician can act on.
fn explain(e: std::io::Error, source: &str) -> TlsError {
    let inner = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    TlsError::Failed(match inner {
        // The first byte of the answer is no TLS record type: a plain HTTP
        // server answered ("HTTP/1.1 400 ...").
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => return TlsError::NotTls,
        Some(rustls::Error::InvalidCertificate(cert)) => {
            format!("server certificate rejected ({cert:?}); trusted roots: {source}")
        }
        Some(other) => format!("TLS handshake failed: {other}"),
        None => format!("TLS handshake failed: {e}"),
    })
}
