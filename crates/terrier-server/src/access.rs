//! Visitor access control per device, set by the operator for a device
//! name: an IP allow-list (CIDRs; applies to HTTP, TCP ports and TLS
//! passthrough) and HTTP basic auth (HTTP only). A device with no rule is
//! open to every visitor, as before.
//!
//! The address checked is the visitor's TCP peer, or for a request a peer
//! node forwarded, the address its authenticated envelope vouches for. Passwords are stored
//! as SHA-256 hex: use long random ones (`openssl rand -base64 18`), since
//! an unsalted fast hash protects a guessable password poorly.

use std::collections::HashMap;
use std::net::IpAddr;

use arc_swap::ArcSwap;
use base64::Engine;
use http::HeaderMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One device's rules as written in `[access."<name>"]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Visitors must come from one of these networks (`10.0.0.0/8`, `192.0.2.7`).
    pub allow_ips: Vec<String>,
    /// HTTP visitors must give one of these user/password pairs.
    pub basic_auth: Vec<BasicUser>,
}

/// A basic-auth user.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasicUser {
    /// User name.
    pub user: String,
    /// Lowercase hex SHA-256 of the password (`printf %s 'pw' | sha256sum`).
    pub password_sha256: String,
}

/// Why a visitor was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The address is not on the allow-list (403).
    Address,
    /// Missing or wrong basic-auth credentials (401).
    Credentials,
}

/// The compiled rules of every device that has some. A `SIGHUP` swaps in
/// new rules ([`AccessRules::replace`]); each check reads the rules in force
/// at that moment, without a lock.
#[derive(Debug, Default)]
pub struct AccessRules {
    devices: ArcSwap<HashMap<String, DeviceRules>>,
}

#[derive(Debug)]
struct DeviceRules {
    allow: Vec<IpNet>,
    users: Vec<(String, [u8; 32])>,
}

impl AccessRules {
    /// Compiles the configuration; the error names the device and the bad value.
    pub fn compile(config: &std::collections::BTreeMap<String, AccessConfig>) -> Result<Self, String> {
        let mut devices = HashMap::new();
        for (name, rules) in config {
            let allow = rules
                .allow_ips
                .iter()
                .map(|s| {
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| format!("access.{name}.allow_ips: {s:?} is not an address or CIDR"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let users = rules
                .basic_auth
                .iter()
                .map(|u| {
                    let bytes = decode_hex32(&u.password_sha256).ok_or_else(|| {
                        format!("access.{name}.basic_auth: password_sha256 of {:?} must be 64 hex digits", u.user)
                    })?;
                    Ok((u.user.clone(), bytes))
                })
                .collect::<Result<Vec<_>, String>>()?;
            devices.insert(name.clone(), DeviceRules { allow, users });
        }
        Ok(Self { devices: ArcSwap::from_pointee(devices) })
    }

    /// Puts `new`'s rules in force for every later check.
    pub fn replace(&self, new: AccessRules) {
        self.devices.store(new.devices.into_inner());
    }

    /// May a visitor from `ip` reach device `name` at all?
    pub fn allows_address(&self, name: &str, ip: IpAddr) -> bool {
        allowed(self.devices.load().get(name), ip)
    }

    /// May this HTTP request from `ip` reach device `name`?
    pub fn check_http(&self, name: &str, ip: IpAddr, headers: &HeaderMap) -> Result<(), Denied> {
        let devices = self.devices.load();
        let rules = devices.get(name);
        if !allowed(rules, ip) {
            return Err(Denied::Address);
        }
        match rules {
            Some(rules) if !rules.users.is_empty() => {
                basic_ok(&rules.users, headers).then_some(()).ok_or(Denied::Credentials)
            }
            _ => Ok(()),
        }
    }
}

fn allowed(rules: Option<&DeviceRules>, ip: IpAddr) -> bool {
    let ip = canonical(ip);
    rules.is_none_or(|rules| rules.allow.is_empty() || rules.allow.iter().any(|n| n.contains(&ip)))
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, from a dual-stack
/// listener) is checked as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn basic_ok(users: &[(String, [u8; 32])], headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else { return false };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let Ok(pair) = String::from_utf8(decoded) else { return false };
    let Some((user, password)) = pair.split_once(':') else { return false };
    let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
    // Check every user without stopping early, so timing tells nothing.
    users.iter().fold(false, |ok, (u, hash)| ok | (u == user && bool::from(hash.ct_eq(&digest))))
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn rules() -> AccessRules {
        let mut config = BTreeMap::new();
        config.insert(
            "cam".to_owned(),
            AccessConfig {
                allow_ips: vec!["10.0.0.0/8".into(), "192.0.2.7".into(), "2001:db8::/32".into()],
                basic_auth: vec![BasicUser {
                    user: "alice".into(),
                    // printf %s 'correct horse' | sha256sum
                    password_sha256: format!("{:x}", Sha256::digest(b"correct horse")),
                }],
            },
        );
        AccessRules::compile(&config).expect("valid")
    }

    fn basic(user_password: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_password));
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn addresses_are_checked_against_the_allow_list() {
        let rules = rules();
        for ok in ["10.1.2.3", "192.0.2.7", "2001:db8::1", "::ffff:10.9.9.9"] {
            assert!(rules.allows_address("cam", ok.parse().unwrap()), "{ok}");
        }
        for no in ["11.0.0.1", "192.0.2.8", "2001:db9::1"] {
            assert!(!rules.allows_address("cam", no.parse().unwrap()), "{no}");
        }
        assert!(rules.allows_address("other-device", "11.0.0.1".parse().unwrap()), "no rule, no limit");
    }

    #[test]
    fn basic_auth_needs_the_right_user_and_password() {
        let rules = rules();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(rules.check_http("cam", ip, &basic("alice:correct horse")), Ok(()));
        assert_eq!(rules.check_http("cam", ip, &basic("alice:wrong")), Err(Denied::Credentials));
        assert_eq!(rules.check_http("cam", ip, &basic("bob:correct horse")), Err(Denied::Credentials));
        assert_eq!(rules.check_http("cam", ip, &HeaderMap::new()), Err(Denied::Credentials));
        assert_eq!(
            rules.check_http("cam", "8.8.8.8".parse().unwrap(), &basic("alice:correct horse")),
            Err(Denied::Address)
        );
    }

    #[test]
    fn replace_puts_new_rules_in_force() {
        let rules = rules();
        let outside: IpAddr = "11.0.0.1".parse().unwrap();
        assert!(!rules.allows_address("cam", outside));
        rules.replace(AccessRules::compile(&BTreeMap::new()).unwrap());
        assert!(rules.allows_address("cam", outside), "no rule any more, no limit");
        assert_eq!(rules.check_http("cam", outside, &HeaderMap::new()), Ok(()));
    }

    #[test]
    fn bad_rules_are_config_errors() {
        let mut config = BTreeMap::new();
        config.insert("cam".to_owned(), AccessConfig { allow_ips: vec!["10.0.0.0/33".into()], basic_auth: vec![] });
        assert!(AccessRules::compile(&config).unwrap_err().contains("allow_ips"));
        config.insert(
            "cam".to_owned(),
            AccessConfig {
                allow_ips: vec![],
                basic_auth: vec![BasicUser { user: "a".into(), password_sha256: "xyz".into() }],
            },
        );
        assert!(AccessRules::compile(&config).unwrap_err().contains("64 hex digits"));
    }
}
