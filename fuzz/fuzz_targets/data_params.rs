//! The data handshake query (`GET /v1/data?session=…&stream=…` or
//! `…&pool=1`): `DataParams::parse` on arbitrary query strings.
//!
//! Checks: no panic; an accepted query carries well-formed ids only (32
//! lowercase hex digits), a pooled one only when `pool` was set to something
//! other than `0`; and the parameters written back parse the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use terrier_proto::name::is_valid_id;
use terrier_server::tunnel::data::DataParams;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let Ok(params) = DataParams::parse(Some(query)) else { return };
    let mut again = form_urlencoded::Serializer::new(String::new());
    match &params {
        DataParams::Stream { session, stream } => {
            assert!(is_valid_id(session) && is_valid_id(stream), "accepted {params:?}");
            again.append_pair("session", session).append_pair("stream", stream);
        }
        DataParams::Pool { session } => {
            assert!(is_valid_id(session), "accepted {params:?}");
            let pool = form_urlencoded::parse(data).filter(|(k, _)| k == "pool").last();
            assert!(pool.is_some_and(|(_, v)| v != "0"), "pooled without pool=1: {query:?}");
            again.append_pair("session", session).append_pair("pool", "1");
        }
    }
    let again = again.finish();
    assert_eq!(DataParams::parse(Some(&again)), Ok(params), "{again}");
});
