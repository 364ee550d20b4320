//! The control handshake query (`GET /v1/control?name=…&http=1&tcp=…`):
//! `ControlParams::parse` on arbitrary query strings.
//!
//! Checks: no panic; an accepted query names a valid device, announces at
//! least one and at most `MAX_SERVICES` services, each TCP id valid and
//! unique, with agent and platform cut to 64 characters; and the accepted
//! parameters, written back as a query, parse to the same parameters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use terrier_proto::limits::MAX_SERVICES;
use terrier_proto::name::{is_valid_name, is_valid_service_id};
use terrier_server::tunnel::control::ControlParams;

fuzz_target!(|data: &[u8]| {
    // The URI of a request is ASCII, but the parser takes any &str.
    let Ok(query) = std::str::from_utf8(data) else { return };
    let Ok(p) = ControlParams::parse(Some(query)) else { return };
    assert!(is_valid_name(&p.name), "accepted bad name {:?}", p.name);
    assert!(p.http || !p.tcp.is_empty(), "accepted no services");
    assert!(p.tcp.len() + usize::from(p.http) <= MAX_SERVICES, "accepted {} services", p.tcp.len());
    for (i, id) in p.tcp.iter().enumerate() {
        assert!(is_valid_service_id(id), "accepted bad service id {id:?}");
        assert!(!p.tcp[..i].contains(id), "accepted {id:?} twice");
    }
    assert!(p.agent.chars().count() <= 64 && p.platform.chars().count() <= 64);

    let mut again = form_urlencoded::Serializer::new(String::new());
    again.append_pair("name", &p.name).append_pair("tcp", &p.tcp.join(","));
    if p.http {
        again.append_pair("http", "1");
    }
    again.append_pair("hops", &p.hops.to_string()).append_pair("agent", &p.agent).append_pair("platform", &p.platform);
    let again = again.finish();
    assert_eq!(ControlParams::parse(Some(&again)), Ok(p), "{again}");
});
