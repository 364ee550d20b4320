//! The envelope that lets a node vouch for a visitor when it forwards the
//! visitor's request to the node holding the device: an HMAC-SHA256, under
//! a secret the nodes share, over the request's method, authority and
//! target, the visitor's address and scheme, the sending node, a timestamp
//! and a nonce. The receiving node trusts the visitor's address only from
//! an envelope that verifies, is fresh, and was not seen before; it then
//! applies the device's access rules to that address itself.
//!
//! Wire form, one header ([`ENVELOPE_HEADER`]):
//! `v1;kid=<8 hex>;ts=<unix ms>;nonce=<32 hex>;from=<node>;ip=<ip>;proto=<http|https>;mac=<64 hex>`.
//! Why a MAC rather than a listener only peers reach: see
//! docs/designs/2026-12-04-one-http-path.md.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use hmac::{Hmac, Mac};
use http::header::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::forwarding::{Proto, Visitor};

/// The header carrying the envelope. Like every `X-Terrier-*` header, it
/// is stripped from what a visitor sends.
pub const ENVELOPE_HEADER: HeaderName = HeaderName::from_static("x-terrier-forwarded");

/// Most nonces remembered at once. Peers forward for any visitor, so a
/// flood of visitors can fill it: past it the nonce due to be forgotten
/// first goes early (its envelope could then be replayed for the rest of
/// its window, by someone who sees the traffic between nodes), instead of
/// every forwarded request being refused.
const MAX_REMEMBERED_NONCES: usize = 100_000;

type HmacSha256 = Hmac<Sha256>;

/// One shared secret and its id (the first 4 bytes of its SHA-256, in hex),
/// so a verifier finds the key an envelope names without trying each.
#[derive(Clone)]
struct Key {
    id: String,
    secret: Vec<u8>,
}

impl Key {
    fn new(secret: &[u8]) -> Self {
        let digest = Sha256::digest(secret);
        Self { id: crate::hex::encode(&digest[..4]), secret: secret.to_vec() }
    }
}

/// The request an envelope is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Bound<'a> {
    /// Request method.
    pub method: &'a str,
    /// The authority the request is routed by (lowercase host, no port).
    pub authority: &'a str,
    /// Path and query.
    pub target: &'a str,
}

/// Why an envelope was refused; each is logged, and the visitor gets 403.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The header is not an envelope.
    #[error("malformed envelope")]
    Malformed,
    /// Signed with a key this node does not know.
    #[error("unknown key id {0}")]
    UnknownKey(String),
    /// The MAC does not match.
    #[error("bad MAC")]
    BadMac,
    /// Older than the validity window, or from the future.
    #[error("stale envelope ({0} ms off)")]
    Stale(i64),
    /// The nonce was seen before.
    #[error("replayed envelope")]
    Replayed,
}

/// The keys of this node: the first signs, all verify (so a new secret can
/// be rolled out to every node before any signs with it), and the nonces
/// seen within the validity window.
pub struct Envelopes {
    keys: Vec<Key>,
    /// The node id written into envelopes this node signs.
    node_id: String,
    /// How old (or how far ahead) an envelope may be.
    max_age: Duration,
    /// The nonces seen, with when each may be forgotten.
    seen: Mutex<Nonces>,
}

/// Nonces seen, by nonce and by when they may be forgotten (unix ms), so
/// forgetting takes the due ones off the front instead of a scan.
#[derive(Default)]
struct Nonces {
    /// Nonce -> when it may be forgotten.
    by_nonce: HashMap<[u8; 16], u64>,
    /// (when it may be forgotten, nonce), soonest first.
    by_time: std::collections::BTreeSet<(u64, [u8; 16])>,
}

impl Nonces {
    /// Forgets the nonces due at `now_ms`.
    fn forget_due(&mut self, now_ms: u64) {
        while let Some(&(at, nonce)) = self.by_time.first().filter(|(at, _)| *at <= now_ms) {
            self.by_time.remove(&(at, nonce));
            self.by_nonce.remove(&nonce);
        }
    }

    /// Remembers `nonce` until `forget_at`; `false` if it was seen already.
    fn insert(&mut self, nonce: [u8; 16], forget_at: u64) -> bool {
        if self.by_nonce.contains_key(&nonce) {
            return false;
        }
        if self.by_nonce.len() >= MAX_REMEMBERED_NONCES {
            if let Some((_, soonest)) = self.by_time.pop_first() {
                self.by_nonce.remove(&soonest);
            }
        }
        self.by_nonce.insert(nonce, forget_at);
        self.by_time.insert((forget_at, nonce));
        true
    }
}

impl Envelopes {
    /// Envelopes signed with `secrets[0]`, verified against any of them.
    pub fn new(secrets: &[Vec<u8>], node_id: &str, max_age: Duration) -> Self {
        assert!(!secrets.is_empty(), "at least one secret");
        Self {
            keys: secrets.iter().map(|s| Key::new(s)).collect(),
            node_id: node_id.to_owned(),
            max_age,
            seen: Mutex::default(),
        }
    }

    /// The envelope for forwarding `request` from `visitor`, at `now_ms`.
    pub fn seal(&self, request: Bound<'_>, visitor: &Visitor, now_ms: u64) -> HeaderValue {
        let key = &self.keys[0];
        let nonce: [u8; 16] = rand::random();
        let fields = Fields {
            kid: &key.id,
            ts: now_ms,
            nonce: &crate::hex::encode(&nonce),
            from: &self.node_id,
            ip: visitor.ip,
            proto: visitor.proto,
        };
        let mac = crate::hex::encode(&mac(key, &fields, request));
        let text = format!(
            "v1;kid={};ts={};nonce={};from={};ip={};proto={};mac={mac}",
            fields.kid,
            fields.ts,
            fields.nonce,
            fields.from,
            fields.ip,
            fields.proto.as_str()
        );
        HeaderValue::try_from(text).expect("an envelope is ASCII without control characters")
    }

    /// The visitor `value` vouches for, if it is a fresh, unseen envelope for
    /// `request` under one of this node's keys. A verified nonce is
    /// remembered, so the same envelope is refused the second time.
    pub fn open(&self, value: &HeaderValue, request: Bound<'_>, now_ms: u64) -> Result<(Visitor, String), Refused> {
        let text = value.to_str().map_err(|_| Refused::Malformed)?;
        let parsed = Parsed::parse(text).ok_or(Refused::Malformed)?;
        let key = self.keys.iter().find(|k| k.id == parsed.fields.kid).ok_or_else(|| {
            Refused::UnknownKey(parsed.fields.kid.chars().filter(char::is_ascii_hexdigit).take(8).collect())
        })?;
        let expected = mac(key, &parsed.fields, request);
        let given = crate::hex::decode::<32>(parsed.mac).ok_or(Refused::Malformed)?;
        // A constant-time comparison: the MAC must not leak byte by byte.
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &given[..])) {
            return Err(Refused::BadMac);
        }
        // Wide enough that no timestamp a peer writes can overflow it.
        let skew = i64::try_from(i128::from(now_ms) - i128::from(parsed.fields.ts)).unwrap_or(i64::MIN);
        if skew.unsigned_abs() > self.max_age.as_millis() as u64 {
            return Err(Refused::Stale(skew));
        }
        let nonce = crate::hex::decode::<16>(parsed.fields.nonce).ok_or(Refused::Malformed)?;
        self.remember(nonce, parsed.fields.ts, now_ms)?;
        let visitor = Visitor::new(parsed.fields.ip, parsed.fields.proto);
        Ok((visitor, parsed.fields.from.to_owned()))
    }

    /// Remembers the nonce of an envelope stamped `ts` (already checked
    /// fresh at `now_ms`).
    fn remember(&self, nonce: [u8; 16], ts: u64, now_ms: u64) -> Result<(), Refused> {
        let mut seen = self.seen.lock().expect("nonce lock");
        seen.forget_due(now_ms);
        // Kept exactly while its envelope is fresh: when a flood fills the
        // list, the nonce dropped first is the one closest to going stale.
        let forget_at = ts.saturating_add(self.max_age.as_millis() as u64 + 1);
        if seen.insert(nonce, forget_at) {
            Ok(())
        } else {
            Err(Refused::Replayed)
        }
    }

    /// Forgets nonces old enough that their envelopes are stale anyway.
    pub fn prune(&self, now_ms: u64) {
        self.seen.lock().expect("nonce lock").forget_due(now_ms);
    }
}

/// Store blob holding the secret nodes share when `cluster.secret_file`
/// is unset.
const SHARED_SECRET_BLOB: &str = "cluster/forward-secret";

/// The secrets this node signs and verifies with: `cluster.secret_file`'s
/// lines; else, with a shared store, one random secret the first node put
/// there (anyone who can write the store can already redirect devices);
/// else (one node) a random secret no one else knows, so no request is ever
/// taken as forwarded.
pub async fn secrets(config: &crate::ServerConfig, store: &dyn crate::store::Store) -> anyhow::Result<Vec<Vec<u8>>> {
    use anyhow::Context;
    let fresh: [u8; 32] = rand::random();
    if let Some(path) = &config.cluster.secret_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading cluster.secret_file {}", path.display()))?;
        let secrets: Vec<Vec<u8>> =
            text.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| l.as_bytes().to_vec()).collect();
        if secrets.is_empty() || secrets.iter().any(|s| s.len() < 16) {
            anyhow::bail!(
                "cluster.secret_file {} must hold secrets of 16 characters or more, one per line",
                path.display()
            );
        }
        return Ok(secrets);
    }
    if config.store == "embedded" {
        return Ok(vec![fresh.to_vec()]);
    }
    let shared =
        store.blob_or_insert(SHARED_SECRET_BLOB, &fresh).await.context("reading the cluster's shared secret")?;
    if shared.len() < 16 {
        anyhow::bail!("the cluster's shared secret in the store is {} bytes; it must be 16 or more", shared.len());
    }
    Ok(vec![shared])
}

/// The signed fields besides the request.
struct Fields<'a> {
    kid: &'a str,
    ts: u64,
    nonce: &'a str,
    from: &'a str,
    ip: IpAddr,
    proto: Proto,
}

/// An envelope's text, split.
struct Parsed<'a> {
    fields: Fields<'a>,
    mac: &'a str,
}

impl<'a> Parsed<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.split(';');
        if parts.next()? != "v1" {
            return None;
        }
        let mut field = |name: &str| parts.next()?.strip_prefix(name)?.strip_prefix('=');
        let (kid, ts, nonce, from, ip, proto, mac) = (
            field("kid")?,
            field("ts")?,
            field("nonce")?,
            field("from")?,
            field("ip")?,
            field("proto")?,
            field("mac")?,
        );
        if parts.next().is_some() {
            return None;
        }
        let fields =
            Fields { kid, ts: ts.parse().ok()?, nonce, from, ip: ip.parse().ok()?, proto: Proto::parse(proto)? };
        Some(Self { fields, mac })
    }
}

/// The MAC over every signed field and the request, each on its own line
/// (no field can hold a newline: header values cannot).
fn mac(key: &Key, f: &Fields<'_>, request: Bound<'_>) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(&key.secret).expect("HMAC takes any key length");
    // The fields joined by "\n", fed in pieces: the same bytes, no string built.
    let (ts, ip) = (f.ts.to_string(), f.ip.to_string());
    let fields =
        [f.kid, &ts, f.nonce, f.from, &ip, f.proto.as_str(), request.method, request.authority, request.target];
    mac.update(b"terrier-forward-v1");
    for field in fields {
        mac.update(b"\n");
        mac.update(field.as_bytes());
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: Bound<'static> = Bound { method: "GET", authority: "dev.example.com", target: "/a?b" };
    const WINDOW: Duration = Duration::from_secs(10);

    fn visitor() -> Visitor {
        Visitor::new("192.0.2.7".parse().unwrap(), Proto::Https)
    }

    #[test]
    fn a_sealed_envelope_opens_once_for_the_same_request() {
        let a = Envelopes::new(&[b"shared".to_vec()], "node-a", WINDOW);
        let b = Envelopes::new(&[b"shared".to_vec()], "node-b", WINDOW);
        let sealed = a.seal(GET, &visitor(), 1_000_000);
        let (opened, from) = b.open(&sealed, GET, 1_000_500).unwrap();
        assert_eq!((opened.ip, opened.proto, from.as_str()), (visitor().ip, Proto::Https, "node-a"));
        assert_eq!(b.open(&sealed, GET, 1_000_600).unwrap_err(), Refused::Replayed);
    }

    #[test]
    fn anything_changed_or_late_is_refused() {
        let a = Envelopes::new(&[b"shared".to_vec()], "node-a", WINDOW);
        let b = Envelopes::new(&[b"shared".to_vec()], "node-b", WINDOW);
        let sealed = a.seal(GET, &visitor(), 1_000_000);
        let other_path = Bound { target: "/admin", ..GET };
        assert_eq!(b.open(&sealed, other_path, 1_000_000).unwrap_err(), Refused::BadMac);
        let other_host = Bound { authority: "other.example.com", ..GET };
        assert_eq!(b.open(&sealed, other_host, 1_000_000).unwrap_err(), Refused::BadMac);
        let forged_ip = HeaderValue::try_from(sealed.to_str().unwrap().replace("192.0.2.7", "10.0.0.1")).unwrap();
        assert_eq!(b.open(&forged_ip, GET, 1_000_000).unwrap_err(), Refused::BadMac);
        assert!(matches!(b.open(&sealed, GET, 1_000_000 + 10_001).unwrap_err(), Refused::Stale(_)));
        assert!(matches!(b.open(&sealed, GET, 1_000_000 - 10_001).unwrap_err(), Refused::Stale(_)));
        let stranger = Envelopes::new(&[b"other".to_vec()], "node-c", WINDOW);
        assert!(matches!(stranger.open(&sealed, GET, 1_000_000).unwrap_err(), Refused::UnknownKey(_)));
        for junk in ["", "v1", "x", "v1;kid=;ts=;nonce=;from=;ip=;proto=;mac="] {
            assert_eq!(b.open(&HeaderValue::from_static(junk), GET, 0).unwrap_err(), Refused::Malformed, "{junk:?}");
        }
    }

    #[test]
    fn a_timestamp_at_the_end_of_time_is_stale_not_a_panic() {
        let a = Envelopes::new(&[b"shared".to_vec()], "node-a", WINDOW);
        let b = Envelopes::new(&[b"shared".to_vec()], "node-b", WINDOW);
        let sealed = a.seal(GET, &visitor(), u64::MAX);
        assert!(matches!(b.open(&sealed, GET, 0).unwrap_err(), Refused::Stale(_)));
    }

    #[test]
    fn a_second_secret_verifies_while_the_first_signs() {
        let old = Envelopes::new(&[b"old".to_vec()], "node-a", WINDOW);
        let rolling = Envelopes::new(&[b"new".to_vec(), b"old".to_vec()], "node-b", WINDOW);
        assert!(rolling.open(&old.seal(GET, &visitor(), 5), GET, 5).is_ok());
    }

    #[test]
    fn a_full_nonce_list_forgets_the_soonest_due_instead_of_refusing() {
        let mut nonces = Nonces::default();
        for i in 0..MAX_REMEMBERED_NONCES as u64 {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&i.to_be_bytes());
            assert!(nonces.insert(nonce, 1_000 + i));
        }
        let fresh = [0xff; 16];
        assert!(nonces.insert(fresh, 5_000_000), "a new envelope is still taken");
        assert!(!nonces.insert(fresh, 5_000_000), "and is still refused as a replay");
        assert_eq!(nonces.by_nonce.len(), MAX_REMEMBERED_NONCES);
        assert!(!nonces.by_nonce.contains_key(&[0u8; 16]), "the soonest due went");
        nonces.forget_due(1_000 + 10);
        assert_eq!(nonces.by_nonce.len(), MAX_REMEMBERED_NONCES - 10);
        assert_eq!(nonces.by_time.len(), nonces.by_nonce.len());
    }
}
