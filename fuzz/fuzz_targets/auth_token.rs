//! Device credentials as presented: `auth::bearer` on an arbitrary
//! `Authorization` header value, and `auth::token::split` on its result and
//! on arbitrary strings.
//!
//! Checks: no panic; `bearer` only answers for the `Bearer` scheme (any
//! case) and returns the trimmed credential found in the header; `split`
//! only accepts `terrier_<10 of [a-z0-9]>_<32 of [a-z0-9]>` and returns
//! exactly those two parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use terrier_server::auth::{bearer, token::split};

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_split(text);
    }
    let Ok(value) = http::HeaderValue::from_bytes(data) else { return };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    let Some(credential) = bearer(&headers) else { return };
    let text = std::str::from_utf8(data).expect("bearer answers only for text headers");
    let scheme = text.trim_start().get(..7).expect("scheme and space present");
    assert!(scheme.eq_ignore_ascii_case("bearer "), "scheme {scheme:?}");
    assert!(text.contains(credential));
    assert_eq!(credential, credential.trim(), "credential not trimmed");
    check_split(credential);
});

fn check_split(token: &str) {
    let Some((id, secret)) = split(token) else { return };
    assert_eq!(id.len(), 10);
    assert_eq!(secret.len(), 32);
    assert!(id.bytes().chain(secret.bytes()).all(|b| ALPHABET.contains(&b)), "{token:?}");
    assert_eq!(token, format!("terrier_{id}_{secret}"));
}
