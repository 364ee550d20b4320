//! Routing by host name: `request_host` on requests whose `Host` header or
//! URI authority holds arbitrary bytes, then `classify` against the served
//! domain; and `classify` on arbitrary SNI names as the TLS ingress does
//! (passthrough routes on the SNI before any decryption).
//!
//! Checks: no panic; a request host is non-empty, lowercase and has no
//! trailing dot; `Apex` only for the domain itself; `Device(label)` only for
//! a valid subdomain label with `host == label + "." + domain`, so a device
//! is never reached through a host outside the domain or a nested name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use terrier_proto::name::is_valid_subdomain;
use terrier_server::ingress::http::{classify, request_host, Target};

/// Served domains as operators configure them.
const DOMAINS: [&str; 4] = ["localhost", "tunnel.example.com", "127.0.0.1.nip.io", "x"];

// Input: a byte choosing the domain, a byte choosing where the host goes
// (`Host` header, URI authority, or both), then the host bytes, optionally
// followed by NUL and a second `Host` value (used with the URI authority).
fuzz_target!(|data: &[u8]| {
    let [domain, place, rest @ ..] = data else { return };
    let domain = DOMAINS[usize::from(*domain) % DOMAINS.len()];
    let (host, other) = match rest.iter().position(|&b| b == 0) {
        Some(nul) => (&rest[..nul], &rest[nul + 1..]),
        None => (rest, &b"other.example"[..]),
    };
    // SNI routing: rustls hands over the name, the ingress lowercases it.
    if let Ok(sni) = std::str::from_utf8(host) {
        check_classify(&sni.to_ascii_lowercase(), domain);
        check_classify(sni, domain);
    }
    let mut req = http::Request::builder();
    match place % 3 {
        0 => req = req.header(http::header::HOST, host),
        1 => req = req.uri(uri(host)),
        _ => req = req.uri(uri(host)).header(http::header::HOST, other),
    }
    // Bytes that are neither a header value nor an authority never reach us.
    let Ok(req) = req.body(()) else { return };
    let Some(host) = request_host(&req) else { return };
    assert!(!host.is_empty());
    assert!(!host.bytes().any(|b| b.is_ascii_uppercase()), "not lowercased: {host:?}");
    assert!(!host.ends_with('.'), "trailing dot kept: {host:?}");
    check_classify(&host, domain);
});

fn uri(authority: &[u8]) -> Vec<u8> {
    [b"http://", authority, b"/"].concat()
}

fn check_classify(host: &str, domain: &str) {
    match classify(host, domain) {
        Target::Apex => assert_eq!(host, domain),
        Target::Device(label) => {
            assert!(is_valid_subdomain(label), "bad label {label:?} from {host:?}");
            assert_eq!(host, format!("{label}.{domain}"), "device outside {domain}");
        }
        Target::Unknown => {
            assert_ne!(host, domain);
            let label = host.strip_suffix(domain).and_then(|l| l.strip_suffix('.'));
            assert!(!label.is_some_and(is_valid_subdomain), "missed device {host:?}");
        }
    }
}
