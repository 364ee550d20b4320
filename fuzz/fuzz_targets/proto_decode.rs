//! Control-message decoding on arbitrary bytes, as each peer does it:
//! `serde_json` (the server decodes `AgentMessage`, the agent `ServerMessage`)
//! and `serde-json-core` (firmware).
//!
//! Checks: no panic; whatever decodes has plain strings (see
//! `terrier_proto::messages::is_plain`), re-encodes to the same bytes with
//! both encoders, and decodes back to the same message with both decoders;
//! the two decoders agree on every UTF-8 input serde_json accepts (control
//! frames are WebSocket text frames, so always UTF-8; on other bytes
//! serde_json skips an unknown field's string unchecked, serde-json-core
//! rejects it, found in the first run).
#![no_main]

use libfuzzer_sys::fuzz_target;
use terrier_fuzz::{core_decode, plain_agent, plain_server};
use terrier_proto::{AgentMessage, ServerMessage};

/// Both encoders write the same bytes for `$msg`; both decoders read it back.
macro_rules! round_trip {
    ($ty:ident, $msg:expr) => {{
        let msg = $msg;
        let json = serde_json::to_vec(msg).expect("a decoded message encodes");
        let mut buf = [0u8; 4096];
        let n = serde_json_core::to_slice(msg, &mut buf).expect("serde-json-core encodes it too");
        assert_eq!(&buf[..n], json.as_slice(), "the two encoders disagree on {msg:?}");
        let back = serde_json::from_slice::<$ty>(&json).expect("re-encoded message decodes (serde_json)");
        assert_eq!(&back, msg, "serde_json round trip changed the message");
        let back = core_decode::<$ty>(&json).expect("re-encoded message decodes (serde-json-core)");
        assert_eq!(&back, msg, "serde-json-core round trip changed the message");
    }};
}

fuzz_target!(|data: &[u8]| {
    let text = std::str::from_utf8(data).is_ok();
    if let Ok(msg) = serde_json::from_slice::<ServerMessage>(data) {
        assert!(plain_server(&msg), "serde_json borrowed an escaped string: {msg:?}");
        round_trip!(ServerMessage, &msg);
        if text {
            assert_eq!(core_decode::<ServerMessage>(data).as_ref(), Some(&msg), "serde-json-core disagrees");
        }
    }
    if let Ok(msg) = serde_json::from_slice::<AgentMessage>(data) {
        assert!(plain_agent(&msg), "serde_json borrowed an escaped string: {msg:?}");
        round_trip!(AgentMessage, &msg);
        if text {
            assert_eq!(core_decode::<AgentMessage>(data).as_ref(), Some(&msg), "serde-json-core disagrees");
        }
    }
    // Firmware decoding. Without an unescape buffer serde-json-core hands
    // strings over still escaped; the protocol never sends such strings, so
    // only messages with plain strings must round-trip.
    if let Ok((msg, used)) = serde_json_core::from_slice::<ServerMessage>(data) {
        assert!(used <= data.len());
        if plain_server(&msg) {
            round_trip!(ServerMessage, &msg);
        }
    }
    if let Ok((msg, used)) = serde_json_core::from_slice::<AgentMessage>(data) {
        assert!(used <= data.len());
        if plain_agent(&msg) {
            round_trip!(AgentMessage, &msg);
        }
    }
});
