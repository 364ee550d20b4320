//! Random identifiers: session ids, stream ids and subdomains, all drawn from
//! the OS-seeded CSPRNG so they cannot be guessed or enumerated.

use rand::Rng;
use terrier_proto::name::{SUBDOMAIN_ALPHABET, SUBDOMAIN_LEN};

/// A fresh 128-bit id as 32 lowercase hex digits (stream and session ids).
pub fn random_id() -> String {
    let value: u128 = rand::rng().random();
    format!("{value:032x}")
}

/// A fresh subdomain label: [`SUBDOMAIN_LEN`] characters of `[a-z0-9]`.
pub fn random_subdomain() -> String {
    let mut rng = rand::rng();
    (0..SUBDOMAIN_LEN).map(|_| SUBDOMAIN_ALPHABET[rng.random_range(0..SUBDOMAIN_ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use terrier_proto::name::{is_valid_id, is_valid_subdomain};

    #[test]
    fn ids_are_valid_and_distinct() {
        let ids: HashSet<String> = (0..1000).map(|_| random_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| is_valid_id(id)));
    }

    #[test]
    fn subdomains_are_valid_labels() {
        let subs: HashSet<String> = (0..1000).map(|_| random_subdomain()).collect();
        assert_eq!(subs.len(), 1000);
        assert!(subs.iter().all(|s| is_valid_subdomain(s) && s.len() == SUBDOMAIN_LEN));
    }
}
