//! Picks the certificate for a TLS handshake by its SNI name: the ACME
//! certificate of that exact name once issued, else the first
//! configured certificate valid for the name (wildcards per RFC 6125, as
//! webpki checks them), else one from the development CA if it is on, else
//! the first one, so a client without SNI still gets an answer (and a name
//! mismatch it can report).

use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;

use super::acme::Issued;
use super::dev_ca::DevCa;
use crate::config::ServerConfig;

/// Without SNI, the development CA answers for the apex.
fn dev_default(dev: &DevCa) -> String {
    dev.domain().to_owned()
}

/// The operator's certificate files, loaded; `SIGHUP` swaps in new ones
/// (renewed files) without a restart.
#[derive(Debug, Default)]
pub struct OperatorCerts {
    keys: RwLock<Vec<Arc<CertifiedKey>>>,
}

impl OperatorCerts {
    /// Loads every `tls.certificates` pair; fails naming the bad file.
    pub fn load(config: &ServerConfig) -> anyhow::Result<Self> {
        Ok(Self { keys: RwLock::new(Self::read(config)?) })
    }

    /// Re-reads the files; on any error the old certificates stay and the
    /// error is returned. Returns how many certificates are served.
    pub fn reload(&self, config: &ServerConfig) -> anyhow::Result<usize> {
        let keys = Self::read(config)?;
        let count = keys.len();
        *self.keys.write().expect("certs lock") = keys;
        Ok(count)
    }

    fn read(config: &ServerConfig) -> anyhow::Result<Vec<Arc<CertifiedKey>>> {
        let provider = super::provider();
        config.tls.certificates.iter().map(|files| super::load_pair(&files.cert, &files.key, &provider)).collect()
    }

    fn snapshot(&self) -> Vec<Arc<CertifiedKey>> {
        self.keys.read().expect("certs lock").clone()
    }
}

/// The TLS listener's certificate resolver, in the order the module doc gives.
#[derive(Debug)]
pub struct SniResolver {
    /// Certificates in the operator's order.
    keys: Arc<OperatorCerts>,
    /// The development CA, with `--tls self-signed`.
    dev: Option<DevCa>,
    /// Certificates obtained by ACME, when `[tls.acme]` is on.
    acme: Option<Arc<Issued>>,
}

impl SniResolver {
    /// A resolver over `keys` and, with `--tls self-signed`, the development CA.
    pub fn new(keys: Arc<OperatorCerts>, dev: Option<DevCa>) -> Self {
        Self { keys, dev, acme: None }
    }

    /// Also serves the certificates ACME puts into `acme`, first.
    pub fn with_acme(mut self, acme: Option<Arc<Issued>>) -> Self {
        self.acme = acme;
        self
    }

    /// The first operator certificate valid for `name`, if any.
    pub fn for_name(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = ServerName::try_from(name).ok()?;
        self.keys.snapshot().into_iter().find(|key| {
            let Ok(der) = key.end_entity_cert() else { return false };
            webpki::EndEntityCert::try_from(der).is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        if let Some(acme) = &self.acme {
            if let Some(key) = acme.get(name.unwrap_or(acme.apex())) {
                return Some(key);
            }
        }
        name.and_then(|name| self.for_name(name))
            .or_else(|| self.dev.as_ref().and_then(|dev| dev.certificate_for(name.unwrap_or(&dev_default(dev)))))
            .or_else(|| self.keys.snapshot().first().cloned())
    }
}
