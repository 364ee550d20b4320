//! Visitor access control, set by the operator for a device name, for a
//! fleet (a name prefix: `"thermo-*"`) or for every device (`"*"`); the most
//! specific section applies alone (an exact name, then the longest prefix,
//! then `*`). A device no section covers is open to every visitor.
//!
//! A section holds an IP allow-list (CIDRs; applies to HTTP, TCP ports and
//! TLS passthrough), HTTP credentials (basic auth users, bearer tokens for
//! scripts) and per-path rules ([`paths`]) that close paths, open them to
//! anyone, or say which credentials they take, before anything reaches the
//! device.
//!
//! The address checked is the visitor's TCP peer, or for a request a peer
//! node forwarded, the address its authenticated envelope vouches for.
//! Passwords and tokens are stored as SHA-256 hex: use long random ones
//! (`openssl rand -base64 18`, `openssl rand -hex 32`), since an unsalted
//! fast hash protects a guessable secret poorly.

pub mod paths;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine;
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use paths::{Accepted, Action, PathRule};

/// One section's rules as written in `[access."<name>"]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Visitors must come from one of these networks (`10.0.0.0/8`, `192.0.2.7`).
    pub allow_ips: Vec<String>,
    /// HTTP visitors must give one of these user/password pairs (or a bearer token).
    pub basic_auth: Vec<BasicUser>,
    /// Scripts may send one of these tokens (`Authorization: Bearer`) instead.
    pub bearer_tokens: Vec<BearerToken>,
    /// Rules by path prefix and method ([`paths`]).
    pub paths: Vec<PathRule>,
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

/// A token for scripts and machines.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BearerToken {
    /// What the token is for, named in logs (`"ci"`, `"monitoring"`).
    pub name: String,
    /// Lowercase hex SHA-256 of the token (`printf %s 'tok' | sha256sum`).
    pub token_sha256: String,
}

/// Why a visitor was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The address is not on the allow-list (403).
    Address,
    /// Missing or wrong credentials (401); says which would do.
    Credentials(Accepted),
    /// A path rule closes this path (403).
    Path,
    /// The path is in a form servers read differently, and the device has
    /// path rules (400).
    UnclearPath,
}

/// Tokens kept outside the configuration: the token store's visitor tokens
/// (`terrierd token create --visitors`), minted and revoked while the
/// server runs.
pub trait StoredTokens: Send + Sync {
    /// The id of visitor token `token` when it may visit device `name` now.
    fn visitor(&self, token: &str, name: &str) -> Option<String>;
    /// Is `token` in the form of the store's tokens? Such a token is never
    /// meant for a device, so it never reaches one.
    fn is_stored_form(&self, token: &str) -> bool;
}

/// What let an HTTP request in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Granted {
    /// Who the credentials it showed name, for the request log: `user
    /// <name>`, `token <name>` (the section's) or `stored token <id>`;
    /// `None` where none were needed.
    pub who: Option<String>,
}

/// The compiled rules of every section. A `SIGHUP` swaps in new rules
/// ([`AccessRules::replace`]); each check reads the rules in force at that
/// moment, without a lock.
#[derive(Debug, Default)]
pub struct AccessRules {
    scopes: ArcSwap<Scopes>,
}

/// The sections by what they cover.
#[derive(Debug, Default)]
struct Scopes {
    /// By exact device name.
    devices: HashMap<String, Arc<DeviceRules>>,
    /// By name prefix, longest first.
    fleets: Vec<(String, Arc<DeviceRules>)>,
    /// `"*"`.
    default: Option<Arc<DeviceRules>>,
}

impl Scopes {
    /// The section that applies to device `name`.
    fn get(&self, name: &str) -> Option<&DeviceRules> {
        if let Some(rules) = self.devices.get(name) {
            return Some(rules);
        }
        let fleet = self.fleets.iter().find(|(prefix, _)| name.starts_with(prefix.as_str()));
        fleet.map(|(_, rules)| rules).or(self.default.as_ref()).map(|rules| &**rules)
    }
}

#[derive(Debug)]
struct DeviceRules {
    allow: Vec<IpNet>,
    users: Vec<(String, [u8; 32])>,
    tokens: Vec<(String, [u8; 32])>,
    paths: Vec<paths::Compiled>,
}

impl DeviceRules {
    /// The credentials paths no rule covers take: whichever the section has.
    /// A section with a password or a token takes the store's visitor
    /// tokens too; one with neither is open.
    fn credentials(&self) -> Accepted {
        let any = !self.users.is_empty() || !self.tokens.is_empty();
        Accepted { basic: !self.users.is_empty(), bearer: any }
    }
}

impl AccessRules {
    /// Compiles the configuration; the error names the section and the bad value.
    pub fn compile(config: &std::collections::BTreeMap<String, AccessConfig>) -> Result<Self, String> {
        let mut scopes = Scopes::default();
        for (key, rules) in config {
            let compiled = Arc::new(compile_section(key, rules)?);
            match key.strip_suffix('*') {
                Some("") => scopes.default = Some(compiled),
                Some(prefix) if prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') => {
                    scopes.fleets.push((prefix.to_owned(), compiled));
                }
                None if terrier_proto::name::is_valid_name(key) => {
                    scopes.devices.insert(key.clone(), compiled);
                }
                _ => {
                    return Err(format!(
                        "access.\"{key}\": not a device name, a name prefix ending in * (\"thermo-*\") or \"*\""
                    ))
                }
            }
        }
        scopes.fleets.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(Self { scopes: ArcSwap::from_pointee(scopes) })
    }

    /// Puts `new`'s rules in force for every later check.
    pub fn replace(&self, new: AccessRules) {
        self.scopes.store(new.scopes.into_inner());
    }

    /// May a visitor from `ip` reach device `name` at all?
    pub fn allows_address(&self, name: &str, ip: IpAddr) -> bool {
        allowed(self.scopes.load().get(name), ip)
    }

    /// May this HTTP request (`method` on `path`, from `ip`) reach device
    /// `name`? Checked in order: the address, the path's form and rule,
    /// then the credentials that path takes. A request let in loses every
    /// `Authorization` value showing one of the section's bearer tokens,
    /// needed on this path or not: they are terrier's, and a device of a
    /// fleet that saw one could use it on every other.
    pub fn check_http(
        &self,
        name: &str,
        ip: IpAddr,
        method: &http::Method,
        path: &str,
        headers: &mut HeaderMap,
        stored: &dyn StoredTokens,
    ) -> Result<Granted, Denied> {
        let scopes = self.scopes.load();
        let Some(rules) = scopes.get(name) else {
            remove_tokens(None, stored, headers);
            return Ok(Granted::default());
        };
        if !allowed(Some(rules), ip) {
            return Err(Denied::Address);
        }
        let accepted = if rules.paths.is_empty() {
            rules.credentials()
        } else {
            let path = paths::normal(path).ok_or(Denied::UnclearPath)?;
            match paths::action(&rules.paths, method, &path) {
                Some(Action::Deny) => return Err(Denied::Path),
                Some(Action::Accept(accepted)) => accepted,
                None => rules.credentials(),
            }
        };
        let granted = if accepted.anyone() {
            Granted::default()
        } else {
            shown_credentials(rules, accepted, headers, name, stored).ok_or(Denied::Credentials(accepted))?
        };
        remove_tokens(Some(rules), stored, headers);
        Ok(granted)
    }
}

/// Compiles one `[access."<key>"]` section.
fn compile_section(key: &str, rules: &AccessConfig) -> Result<DeviceRules, String> {
    let allow = rules
        .allow_ips
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("access.{key}.allow_ips: {s:?} is not an address or CIDR"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let digest = |what: &str, of: &str, hex: &str| {
        crate::hex::decode::<32>(hex)
            .ok_or_else(|| format!("access.{key}.{what}: the SHA-256 of {of:?} must be 64 hex digits"))
    };
    let users = rules
        .basic_auth
        .iter()
        .map(|u| Ok((u.user.clone(), digest("basic_auth", &u.user, &u.password_sha256)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let tokens = rules
        .bearer_tokens
        .iter()
        .map(|t| Ok((t.name.clone(), digest("bearer_tokens", &t.name, &t.token_sha256)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let mut section = DeviceRules { allow, users, tokens, paths: Vec::new() };
    // A rule without `accept` takes what the section's other paths take.
    let has = section.credentials();
    section.paths = rules.paths.iter().map(|rule| paths::Compiled::new(key, rule, has)).collect::<Result<_, _>>()?;
    Ok(section)
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

/// The grant for valid credentials of an `accepted` kind in `headers`, for
/// device `name`: a password, a configured token, or a stored visitor token.
fn shown_credentials(
    rules: &DeviceRules,
    accepted: Accepted,
    headers: &HeaderMap,
    name: &str,
    stored: &dyn StoredTokens,
) -> Option<Granted> {
    let (scheme, credentials) = authorization(headers.get(http::header::AUTHORIZATION)?)?;
    if accepted.basic && scheme.eq_ignore_ascii_case("basic") {
        return basic_user(&rules.users, credentials).map(|user| Granted { who: Some(format!("user {user}")) });
    }
    if !accepted.bearer || !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let configured = matching(&rules.tokens, credentials).map(|name| format!("token {name}"));
    let token = configured.or_else(|| stored.visitor(credentials, name).map(|id| format!("stored token {id}")))?;
    Some(Granted { who: Some(token) })
}

/// The scheme and credentials of an `Authorization` value (the one parser
/// of it: device handshakes read theirs through it too).
pub(crate) fn authorization(value: &HeaderValue) -> Option<(&str, &str)> {
    let (scheme, credentials) = value.to_str().ok()?.trim().split_once(' ')?;
    Some((scheme, credentials.trim()))
}

/// Removes the `Authorization` values that show a token of terrier's (one
/// of the section's, or any in the store's form), keeping any other (a
/// password, the device's own token).
fn remove_tokens(rules: Option<&DeviceRules>, stored: &dyn StoredTokens, headers: &mut HeaderMap) {
    let ours = |value: &HeaderValue| {
        authorization(value).is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer")
                && (stored.is_stored_form(token) || rules.is_some_and(|r| matching(&r.tokens, token).is_some()))
        })
    };
    let values = headers.get_all(http::header::AUTHORIZATION);
    let total = values.iter().count();
    let kept: Vec<HeaderValue> = values.iter().filter(|v| !ours(v)).cloned().collect();
    if kept.len() == total {
        return;
    }
    headers.remove(http::header::AUTHORIZATION);
    for value in kept {
        headers.append(http::header::AUTHORIZATION, value);
    }
}

/// The configured user whose password `encoded` (base64 `user:password`) shows.
fn basic_user<'a>(users: &'a [(String, [u8; 32])], encoded: &str) -> Option<&'a str> {
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    let (user, password) = pair.split_once(':')?;
    let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
    // Check every user without stopping early, so timing tells nothing.
    users
        .iter()
        .fold(None, |found, (u, hash)| if u == user && bool::from(hash.ct_eq(&digest)) { Some(u) } else { found })
        .map(String::as_str)
}

/// The name of the token whose hash `token` has; every one is compared,
/// so timing tells nothing.
fn matching<'a>(tokens: &'a [(String, [u8; 32])], token: &str) -> Option<&'a str> {
    if tokens.is_empty() {
        return None;
    }
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    tokens
        .iter()
        .fold(None, |found, (name, hash)| if bool::from(hash.ct_eq(&digest)) { Some(name) } else { found })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const GET: http::Method = http::Method::GET;

    /// A token store with one visitor token, `terrier_…` form aside.
    struct Store;

    const NO_STORE: Store = Store;

    impl StoredTokens for Store {
        fn visitor(&self, token: &str, name: &str) -> Option<String> {
            (token == "terrier_visitor" && name == "cam").then(|| "v1".into())
        }

        fn is_stored_form(&self, token: &str) -> bool {
            token.starts_with("terrier_")
        }
    }
    /// A section with a password takes it, or a token.
    const BASIC: Accepted = Accepted { basic: true, bearer: true };

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
                ..Default::default()
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
        assert_eq!(
            rules.check_http("cam", ip, &GET, "/", &mut basic("alice:correct horse"), &NO_STORE),
            Ok(Granted { who: Some("user alice".into()) })
        );
        assert_eq!(
            rules.check_http("cam", ip, &GET, "/", &mut basic("alice:wrong"), &NO_STORE),
            Err(Denied::Credentials(BASIC))
        );
        assert_eq!(
            rules.check_http("cam", ip, &GET, "/", &mut basic("bob:correct horse"), &NO_STORE),
            Err(Denied::Credentials(BASIC))
        );
        assert_eq!(
            rules.check_http("cam", ip, &GET, "/", &mut HeaderMap::new(), &NO_STORE),
            Err(Denied::Credentials(BASIC))
        );
        assert_eq!(
            rules.check_http(
                "cam",
                "8.8.8.8".parse().unwrap(),
                &GET,
                "/",
                &mut basic("alice:correct horse"),
                &NO_STORE
            ),
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
        assert_eq!(
            rules.check_http("cam", outside, &GET, "/", &mut HeaderMap::new(), &NO_STORE),
            Ok(Granted::default())
        );
    }

    #[test]
    fn bad_rules_are_config_errors() {
        let mut config = BTreeMap::new();
        config.insert("cam".to_owned(), AccessConfig { allow_ips: vec!["10.0.0.0/33".into()], ..Default::default() });
        assert!(AccessRules::compile(&config).unwrap_err().contains("allow_ips"));
        config.insert(
            "cam".to_owned(),
            AccessConfig {
                basic_auth: vec![BasicUser { user: "a".into(), password_sha256: "xyz".into() }],
                ..Default::default()
            },
        );
        assert!(AccessRules::compile(&config).unwrap_err().contains("64 hex digits"));
        let mut config = BTreeMap::new();
        config.insert("Bad Name".to_owned(), AccessConfig::default());
        assert!(AccessRules::compile(&config).unwrap_err().contains("not a device name"));
    }

    fn sha(secret: &str) -> String {
        format!("{:x}", Sha256::digest(secret.as_bytes()))
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        headers
    }

    #[test]
    fn the_most_specific_section_applies_alone() {
        let mut config = BTreeMap::new();
        config.insert("*".to_owned(), AccessConfig { allow_ips: vec!["10.0.0.0/8".into()], ..Default::default() });
        config.insert(
            "thermo-*".to_owned(),
            AccessConfig { allow_ips: vec!["192.0.2.0/24".into()], ..Default::default() },
        );
        config.insert("thermo-lab-*".to_owned(), AccessConfig::default());
        config.insert(
            "thermo-1".to_owned(),
            AccessConfig { allow_ips: vec!["198.51.100.1".into()], ..Default::default() },
        );
        let rules = AccessRules::compile(&config).unwrap();
        let (ten, doc, lab) =
            ("10.1.1.1".parse().unwrap(), "192.0.2.9".parse().unwrap(), "198.51.100.1".parse().unwrap());
        assert!(rules.allows_address("cam", ten) && !rules.allows_address("cam", doc), "* for the rest");
        assert!(
            rules.allows_address("thermo-7", doc) && !rules.allows_address("thermo-7", ten),
            "the fleet's, not *'s"
        );
        assert!(rules.allows_address("thermo-lab-2", ten), "the longest prefix: open");
        assert!(rules.allows_address("thermo-1", lab) && !rules.allows_address("thermo-1", doc), "the exact name");
    }

    #[test]
    fn paths_pick_the_credentials_and_a_bearer_token_is_named() {
        let mut config = BTreeMap::new();
        config.insert(
            "cam".to_owned(),
            AccessConfig {
                basic_auth: vec![BasicUser { user: "alice".into(), password_sha256: sha("correct horse") }],
                bearer_tokens: vec![BearerToken { name: "ci".into(), token_sha256: sha("tok-123") }],
                paths: vec![
                    PathRule { prefix: "/admin".into(), deny: true, ..Default::default() },
                    PathRule {
                        prefix: "/api/".into(),
                        accept: Some(vec![paths::Credential::Bearer]),
                        ..Default::default()
                    },
                    PathRule {
                        prefix: "/status".into(),
                        accept: Some(vec![]),
                        methods: vec!["GET".into()],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        );
        let rules = AccessRules::compile(&config).unwrap();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let check = |method: &http::Method, path: &str, headers: &HeaderMap| {
            rules.check_http("cam", ip, method, path, &mut headers.clone(), &NO_STORE)
        };
        let none = HeaderMap::new();
        let ci = Ok(Granted { who: Some("token ci".into()) });
        assert_eq!(check(&GET, "/admin/x", &basic("alice:correct horse")), Err(Denied::Path));
        assert_eq!(check(&GET, "/ADMIN", &bearer("tok-123")), Err(Denied::Path));
        assert_eq!(check(&GET, "/%61dmin", &none), Err(Denied::Path));
        assert_eq!(check(&GET, "/x/../admin", &none), Err(Denied::UnclearPath));
        assert_eq!(check(&GET, "/api/v1", &bearer("tok-123")), ci);
        assert_eq!(
            check(&GET, "/api/v1", &basic("alice:correct horse")),
            Err(Denied::Credentials(Accepted { basic: false, bearer: true }))
        );
        assert_eq!(
            check(&GET, "/api/v1", &bearer("tok-124")),
            Err(Denied::Credentials(Accepted { basic: false, bearer: true }))
        );
        assert_eq!(check(&GET, "/status", &none), Ok(Granted::default()));
        assert_eq!(
            check(&http::Method::POST, "/status", &none),
            Err(Denied::Credentials(Accepted { basic: true, bearer: true }))
        );
        assert_eq!(check(&GET, "/", &mut basic("alice:correct horse")), Ok(Granted { who: Some("user alice".into()) }));
        assert_eq!(check(&GET, "/", &bearer("tok-123")), ci, "the section's credentials elsewhere");
        assert_eq!(check(&GET, "/", &none), Err(Denied::Credentials(Accepted { basic: true, bearer: true })));
        let mut shown = bearer("tok-123");
        shown.append(http::header::AUTHORIZATION, "Bearer the-device-s-own".parse().unwrap());
        assert_eq!(rules.check_http("cam", ip, &GET, "/status", &mut shown, &NO_STORE), Ok(Granted::default()));
        assert_eq!(
            shown.get_all(http::header::AUTHORIZATION).iter().collect::<Vec<_>>(),
            ["Bearer the-device-s-own"],
            "terrier's token is removed even where it was not needed; others stay"
        );
    }

    #[test]
    fn a_rule_without_accept_in_a_section_without_credentials_stays_open() {
        use paths::PathRule;
        let rule = |prefix: &str, deny: bool| PathRule { prefix: prefix.into(), deny, ..Default::default() };
        let mut config = BTreeMap::new();
        // /admin is closed, but /admin/status is as the device's other
        // paths: open, since the section takes no credentials.
        let section =
            AccessConfig { paths: vec![rule("/admin", true), rule("/admin/status", false)], ..Default::default() };
        config.insert("cam".to_owned(), section);
        let rules = AccessRules::compile(&config).unwrap();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut none = HeaderMap::new();
        assert_eq!(rules.check_http("cam", ip, &GET, "/", &mut none, &NO_STORE), Ok(Granted::default()));
        assert_eq!(rules.check_http("cam", ip, &GET, "/admin", &mut none, &NO_STORE), Err(Denied::Path));
        assert_eq!(rules.check_http("cam", ip, &GET, "/admin/status", &mut none, &NO_STORE), Ok(Granted::default()));
    }

    #[test]
    fn a_stored_visitor_token_opens_what_takes_credentials_and_never_goes_on() {
        let rules = rules();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut shown = bearer("terrier_visitor");
        let granted = rules.check_http("cam", ip, &GET, "/", &mut shown, &NO_STORE);
        assert_eq!(granted, Ok(Granted { who: Some("stored token v1".into()) }));
        assert!(shown.get(http::header::AUTHORIZATION).is_none(), "the store's token never reaches the device");
        let mut other = bearer("terrier_for-another-device");
        assert_eq!(rules.check_http("cam", ip, &GET, "/", &mut other, &NO_STORE), Err(Denied::Credentials(BASIC)));
        let mut open_device = bearer("terrier_visitor");
        assert_eq!(rules.check_http("open", ip, &GET, "/", &mut open_device, &NO_STORE), Ok(Granted::default()));
        assert!(open_device.get(http::header::AUTHORIZATION).is_none(), "not even to a device without rules");
    }
}
