//! `--tls self-signed`: a development CA, generated once into
//! `<data_dir>/tls/` and reused, that signs a certificate for each name a
//! client asks for (the domain or one of its subdomains) on first use.
//!
//! Issuing per name, rather than one wildcard, is what makes the default
//! `localhost` domain work: clients refuse `*.localhost` (a wildcard right
//! under a top-level name). Clients trust the one stable file `dev-ca.pem`.
//! A plain self-signed leaf would not do either: rustls refuses a CA used as
//! an end entity and many clients refuse a leaf used as a root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Most issued certificates kept; past it the cache starts over, so a
/// client sending endless made-up names costs CPU, never memory.
const MAX_ISSUED: usize = 4096;

/// The development CA, issuing certificates on demand.
pub struct DevCa {
    domain: String,
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    /// File clients must trust.
    pub ca_path: PathBuf,
    issued: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").field("domain", &self.domain).field("ca_path", &self.ca_path).finish()
    }
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "terrier development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

impl DevCa {
    /// Loads the CA from `<data_dir>/tls/`, generating it the first time.
    pub fn load_or_create(data_dir: &Path, domain: &str) -> anyhow::Result<Self> {
        let dir = data_dir.join("tls");
        let (ca_path, key_path) = (dir.join("dev-ca.pem"), dir.join("dev-ca.key"));
        if !ca_path.exists() || !key_path.exists() {
            crate::private_file::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let key = KeyPair::generate().context("generating the development CA key")?;
            let cert = ca_params()?.self_signed(&key).context("signing the development CA")?;
            write(&key_path, &key.serialize_pem(), true)?;
            write(&ca_path, &cert.pem(), false)?;
        }
        let key_pem = std::fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem).with_context(|| format!("{} is not a key", key_path.display()))?;
        let ca_der =
            CertificateDer::from_pem_file(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
        Ok(Self {
            domain: domain.to_owned(),
            issuer: Issuer::new(ca_params()?, key),
            ca_der,
            ca_path,
            issued: Mutex::new(HashMap::new()),
        })
    }

    /// The domain it issues for.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// A certificate for `name` if it is the domain or directly under it.
    pub fn certificate_for(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let ours = name == self.domain
            || name
                .strip_suffix(&self.domain)
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(terrier_proto::name::is_valid_subdomain);
        if !ours {
            return None;
        }
        if let Some(key) = self.issued.lock().expect("issued lock").get(name) {
            return Some(key.clone());
        }
        let key = self.issue(name).inspect_err(|e| tracing::warn!(name, error = %e, "could not issue")).ok()?;
        let mut issued = self.issued.lock().expect("issued lock");
        if issued.len() >= MAX_ISSUED {
            issued.clear();
        }
        issued.insert(name.to_owned(), key.clone());
        Some(key)
    }

    fn issue(&self, name: &str) -> anyhow::Result<Arc<CertifiedKey>> {
        let leaf_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        let leaf = params.signed_by(&leaf_key, &self.issuer)?;
        let key_der = PrivateKeyDer::try_from(leaf_key.serialize_der()).map_err(anyhow::Error::msg)?;
        let signing = super::provider().key_provider.load_private_key(key_der)?;
        Ok(Arc::new(CertifiedKey::new(vec![leaf.der().clone(), self.ca_der.clone()], signing)))
    }
}

fn write(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    let written = match private {
        true => crate::private_file::write(path, text.as_bytes()),
        false => std::fs::write(path, text),
    };
    written.with_context(|| format!("writing {}", path.display()))
}
