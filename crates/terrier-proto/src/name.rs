//! Rules for the strings that name things: device names, subdomains, service
//! ids and stream/session ids. Every peer validates with these functions so a
//! name the server accepts is one the agent accepts, and the other way round.

use crate::limits::ID_HEX_LEN;

/// Longest device name (one DNS label).
pub const MAX_NAME_LEN: usize = 63;
/// Longest service id.
pub const MAX_SERVICE_ID_LEN: usize = 32;
/// Characters of a generated subdomain: lowercase letters and digits.
pub const SUBDOMAIN_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Length of a generated subdomain: 10 characters of 36 give 51 bits, well
/// above the 40 bits that keep devices from being enumerated.
pub const SUBDOMAIN_LEN: usize = 10;

/// Is `name` a valid device name: 1 to 63 of `[a-z0-9-]`, not starting or
/// ending with `-` (so it is also a valid DNS label)?
pub fn is_valid_name(name: &str) -> bool {
    is_dns_label(name, MAX_NAME_LEN)
}

/// Is `sub` a valid subdomain label (the same rules as a device name)?
/// Generated subdomains and operator-reserved ones both pass.
pub fn is_valid_subdomain(sub: &str) -> bool {
    is_dns_label(sub, MAX_NAME_LEN)
}

/// Is `id` a valid TCP service id: 1 to 32 of `[a-z0-9_-]`, and not the
/// reserved id of the HTTP service?
pub fn is_valid_service_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SERVICE_ID_LEN
        && id != crate::handshake::HTTP_SERVICE
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Is `id` a well-formed stream or session id: exactly 32 lowercase hex digits?
pub fn is_valid_id(id: &str) -> bool {
    id.len() == ID_HEX_LEN && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_dns_label(s: &str, max: usize) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_label_rules() {
        assert!(is_valid_name("thermo-42"));
        assert!(is_valid_name("a"));
        assert!(is_valid_name(&"a".repeat(63)));
        assert!(!is_valid_name(&"a".repeat(64)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("-lead"));
        assert!(!is_valid_name("trail-"));
        assert!(!is_valid_name("Upper"));
        assert!(!is_valid_name("dot.ted"));
        assert!(!is_valid_name("ünï"));
    }

    #[test]
    fn service_ids_exclude_http_and_punctuation() {
        assert!(is_valid_service_id("22"));
        assert!(is_valid_service_id("ssh_lan-2"));
        assert!(!is_valid_service_id("http"));
        assert!(!is_valid_service_id(""));
        assert!(!is_valid_service_id("a,b"));
        assert!(!is_valid_service_id(&"1".repeat(33)));
    }

    #[test]
    fn ids_are_32_lowercase_hex() {
        assert!(is_valid_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_valid_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_valid_id("0123456789abcdef"));
        assert!(!is_valid_id("0123456789abcdef0123456789abcdeg"));
    }
}
