//! `[tls.acme]`: where to get certificates, for which names, and when to
//! renew them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Automatic certificates by ACME (RFC 8555, TLS-ALPN-01); on when the
/// section is present.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The CA's ACME directory URL.
    pub directory_url: String,
    /// E-mail address the CA may write to about the account (expiry notices).
    pub contact: Option<String>,
    /// Device subdomain labels to certify besides the apex domain.
    pub names: Vec<String>,
    /// Renew a certificate once less than this much of its validity is left.
    #[serde(with = "humantime_serde")]
    pub renew_before: Duration,
    /// How often each name's certificate is checked (and issued or renewed).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Longest one issuance may take (order, validation, download); past it
    /// the attempt is abandoned and retried at the next check.
    #[serde(with = "humantime_serde")]
    pub order_timeout: Duration,
    /// PEM root to trust for the CA's HTTPS API instead of the system roots
    /// (a test CA such as pebble).
    pub ca_root: Option<PathBuf>,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            directory_url: LETS_ENCRYPT.into(),
            contact: None,
            names: Vec::new(),
            renew_before: Duration::from_secs(30 * 24 * 3600),
            check_interval: Duration::from_secs(3600),
            order_timeout: Duration::from_secs(120),
            ca_root: None,
        }
    }
}

impl AcmeConfig {
    /// Checks the section on its own; called by [`crate::ServerConfig::validate`].
    pub fn validate(&self) -> Result<(), String> {
        let url_ok = url::Url::parse(&self.directory_url).is_ok_and(|u| u.scheme() == "https");
        if !url_ok {
            return Err(format!("tls.acme.directory_url {:?} must be an https URL", self.directory_url));
        }
        if let Some(bad) = self.names.iter().find(|n| !terrier_proto::name::is_valid_subdomain(n)) {
            return Err(format!("tls.acme.names: {bad:?} is not a subdomain label"));
        }
        if self.contact.as_deref().is_some_and(|c| !c.contains('@') || c.contains(char::is_whitespace)) {
            return Err("tls.acme.contact must be an e-mail address".into());
        }
        for (key, value) in [
            ("tls.acme.renew_before", self.renew_before),
            ("tls.acme.check_interval", self.check_interval),
            ("tls.acme.order_timeout", self.order_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{key} must be more than zero"));
            }
        }
        Ok(())
    }

    /// Every name to certify: the apex `domain`, then each label under it.
    pub fn all_names(&self, domain: &str) -> Vec<String> {
        let mut names = vec![domain.to_owned()];
        for label in &self.names {
            let name = format!("{label}.{domain}");
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}
