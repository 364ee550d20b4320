//! A rustls client for tests that trusts exactly the CA certificates given,
//! so a handshake proves which certificate the server chose.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

/// A connector trusting only the certificates in `ca_pem` (ring provider).
pub fn connector_trusting(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("PEM certificate")).expect("usable root");
    }
    let config = rustls::ClientConfig::builder_with_provider(terrier_server::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}
