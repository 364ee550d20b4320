//! Device tokens: how they look, how they are minted, and what is stored of
//! them. A token is `terrier_<id>_<secret>`: the id names the record (shown
//! in `token list`, used by `token revoke`), the secret is 160+ bits from the
//! CSPRNG and only its SHA-256 is ever stored. A fast unkeyed hash is enough
//! here: with that much entropy nobody can search for a secret, and a leaked
//! store still yields no usable token.

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use terrier_proto::name::is_valid_name;

/// Every token starts with this, so secret scanners and humans recognise it.
pub const TOKEN_PREFIX: &str = "terrier_";
/// Characters of the public id part.
const ID_LEN: usize = 10;
/// Characters of the secret part (`[a-z0-9]`: 5.17 bits each, 165 bits in all).
const SECRET_LEN: usize = 32;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Which device names a token may register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Exactly this device name.
    Name(String),
    /// Any device name starting with this prefix (a fleet).
    Prefix(String),
}

impl Scope {
    /// The scope of exactly one of a name or a prefix, validated (the
    /// CLI's `--name`/`--prefix` and the API's `name`/`prefix`).
    pub fn from_parts(name: Option<String>, prefix: Option<String>) -> Result<Self, String> {
        let scope = match (name, prefix) {
            (Some(name), None) => Scope::Name(name),
            (None, Some(prefix)) => Scope::Prefix(prefix),
            _ => return Err("give exactly one of name or prefix".into()),
        };
        scope.validate()?;
        Ok(scope)
    }

    /// Does this scope allow device `name`?
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Scope::Name(n) => n == name,
            Scope::Prefix(p) => name.starts_with(p.as_str()),
        }
    }

    /// Checks the scope could ever match a valid device name.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Scope::Name(n) if !is_valid_name(n) => {
                Err(format!("bad device name {n:?}: use 1-63 of [a-z0-9-], not starting or ending with '-'"))
            }
            Scope::Prefix(p) if p.is_empty() || !is_valid_name(&format!("{p}x")) => {
                Err(format!("bad name prefix {p:?}: use [a-z0-9-], not starting with '-'"))
            }
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Name(n) => write!(f, "name {n}"),
            Scope::Prefix(p) => write!(f, "prefix {p}*"),
        }
    }
}

/// Who a token is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An agent registering the devices in scope.
    #[default]
    Device,
    /// Scripts visiting the devices in scope (`Authorization: Bearer`) where
    /// their access rules take a bearer token; it registers no device.
    Visitor,
}

impl Kind {
    fn is_device(&self) -> bool {
        *self == Kind::Device
    }
}

/// What the store keeps of a token: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (the middle part of the token).
    pub id: String,
    /// Names it may register.
    pub scope: Scope,
    /// Lowercase hex SHA-256 of the secret part (of `visitor:` and the
    /// secret part, for a visitor token: see [`secret_matches`]).
    pub secret_sha256: String,
    /// When it was created, Unix ms.
    pub created_ms: u64,
    /// Operator's note (who or what it is for).
    #[serde(default)]
    pub note: String,
    /// When it stops working, Unix ms (never when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// Who it is for (a device token when absent, as every token made
    /// before visitor tokens).
    #[serde(default, skip_serializing_if = "Kind::is_device")]
    pub kind: Kind,
}

impl TokenRecord {
    /// Has the token passed its expiry at `now_ms`?
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|t| t <= now_ms)
    }
}

/// A freshly minted token: the full text (shown once) and its record.
pub struct Minted {
    /// The token to hand to the device; not stored anywhere.
    pub token: String,
    /// What to store.
    pub record: TokenRecord,
}

/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 200;
/// The latest expiry a token may have: the end of year 9999, Unix ms (the
/// last instant RFC 3339 writes).
pub const LATEST_EXPIRY_MS: u64 = 253_402_300_799_999;

/// Checks an operator's note: at most [`MAX_NOTE_CHARS`], and no control
/// characters (a note is printed to terminals by `token list`).
pub fn check_note(note: &str) -> Result<(), String> {
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(format!("note: at most {MAX_NOTE_CHARS} characters"));
    }
    if let Some(c) = note.chars().find(|c| c.is_control()) {
        return Err(format!("note: contains a control character ({c:?}); use printable text"));
    }
    Ok(())
}

/// Draws a new device token for `scope`.
pub fn mint(scope: Scope, note: &str, now_ms: u64) -> Minted {
    mint_kind(scope, Kind::Device, note, now_ms)
}

/// Draws a new token of `kind` for `scope`.
pub fn mint_kind(scope: Scope, kind: Kind, note: &str, now_ms: u64) -> Minted {
    let id = random_chars(ID_LEN);
    let secret = random_chars(SECRET_LEN);
    let record = TokenRecord {
        id: id.clone(),
        scope,
        secret_sha256: secret_digest(kind, &secret),
        created_ms: now_ms,
        note: note.into(),
        expires_ms: None,
        kind,
    };
    Minted { token: format!("{TOKEN_PREFIX}{id}_{secret}"), record }
}

/// Splits a presented token into (id, secret); `None` when malformed.
pub fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b));
    (well_formed(id, ID_LEN) && well_formed(secret, SECRET_LEN)).then_some((id, secret))
}

/// Does `secret` hash to what `record` stores? Constant time in the hash.
pub fn secret_matches(record: &TokenRecord, secret: &str) -> bool {
    secret_digest(record.kind, secret).as_bytes().ct_eq(record.secret_sha256.as_bytes()).into()
}

/// What a record of `kind` stores of `secret`. A visitor token's hash is
/// domain-separated: a terrierd from before token kinds ignores `kind` and
/// would take a visitor record for a device token, so the hash it computes
/// must never match one (a rollback, or an older node of a cluster).
fn secret_digest(kind: Kind, secret: &str) -> String {
    match kind {
        Kind::Device => sha256_hex(secret),
        Kind::Visitor => sha256_hex(&format!("visitor:{secret}")),
    }
}

fn sha256_hex(secret: &str) -> String {
    crate::hex::encode(&Sha256::digest(secret.as_bytes()))
}

fn random_chars(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_split_and_match_only_their_record() {
        let a = mint(Scope::Name("thermo-42".into()), "", 1);
        let b = mint(Scope::Name("thermo-42".into()), "", 1);
        let (id, secret) = split(&a.token).expect("well formed");
        assert_eq!(id, a.record.id);
        assert!(secret_matches(&a.record, secret));
        assert!(!secret_matches(&b.record, secret));
        assert!(!a.token.contains(&a.record.secret_sha256));
    }

    #[test]
    fn a_visitor_record_is_no_device_token_to_a_terrierd_without_kinds() {
        let visitor = mint_kind(Scope::Name("thermo-42".into()), Kind::Visitor, "", 1);
        let (_, secret) = split(&visitor.token).expect("well formed");
        assert!(secret_matches(&visitor.record, secret));
        // What a terrierd from before kinds reads: every field but `kind`.
        let mut json = serde_json::to_value(&visitor.record).unwrap();
        json.as_object_mut().unwrap().remove("kind");
        let as_old_reader_sees: TokenRecord = serde_json::from_value(json).unwrap();
        assert_eq!(as_old_reader_sees.kind, Kind::Device);
        assert!(!secret_matches(&as_old_reader_sees, secret), "a visitor token must not register devices there");
    }

    #[test]
    fn malformed_tokens_do_not_split() {
        for bad in
            ["", "terrier_", "terrier_abc_def", "bearer xyz", &format!("terrier_{}_{}", "A".repeat(10), "a".repeat(32))]
        {
            assert_eq!(split(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn scopes_match_names_and_prefixes() {
        assert!(Scope::Name("a".into()).allows("a"));
        assert!(!Scope::Name("a".into()).allows("ab"));
        assert!(Scope::Prefix("factory-7-".into()).allows("factory-7-0001"));
        assert!(!Scope::Prefix("factory-7-".into()).allows("factory-8-0001"));
        assert!(Scope::Prefix("factory-7-".into()).validate().is_ok());
        assert!(Scope::Prefix("-x".into()).validate().is_err());
        assert!(Scope::Name("Bad Name".into()).validate().is_err());
    }

    #[test]
    fn notes_are_bounded_and_printable() {
        assert!(check_note("kitchen thermostat, ticket #42").is_ok());
        assert!(check_note(&"x".repeat(MAX_NOTE_CHARS + 1)).is_err());
        assert!(check_note("evil\u{1b}[2Jnote").unwrap_err().contains("control character"));
        assert!(check_note("two\nlines").is_err());
    }
}
