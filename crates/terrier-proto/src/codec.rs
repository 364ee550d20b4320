//! Encoding and decoding control messages as JSON with `serde-json-core`,
//! into and out of buffers the caller owns: no allocation, so firmware and
//! the std agents produce the very same bytes (the std side may use
//! `serde_json`; the tests check both agree byte for byte).
//!
//! With the `alloc` feature, [`encode_vec`] returns an owned buffer for
//! callers that have a heap but do not want a second JSON library.

use serde::{Deserialize, Serialize};

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The caller's buffer is smaller than the encoded message.
    BufferTooSmall,
}

/// Why a frame could not be decoded into a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame is not one JSON message of a known type (truncated, malformed,
    /// trailing bytes, or a message type this version does not know — which a
    /// receiver must ignore, see `docs/PROTOCOL.md` §3.3).
    Invalid,
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("control message does not fit the buffer")
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("not a known control message")
    }
}

/// Encodes `msg` as JSON into `buf`; returns the number of bytes written.
pub fn encode<M: Serialize>(msg: &M, buf: &mut [u8]) -> Result<usize, EncodeError> {
    serde_json_core::to_slice(msg, buf).map_err(|_| EncodeError::BufferTooSmall)
}

/// Decodes one whole JSON message from `frame`; strings borrow from `frame`.
/// Trailing bytes after the message are an error.
pub fn decode<'a, M: Deserialize<'a>>(frame: &'a [u8]) -> Result<M, DecodeError> {
    match serde_json_core::from_slice::<M>(frame) {
        Ok((msg, used)) if used == frame.len() => Ok(msg),
        _ => Err(DecodeError::Invalid),
    }
}

/// Encodes `msg` as JSON into a new buffer (with the `alloc` feature).
#[cfg(feature = "alloc")]
pub fn encode_vec<M: Serialize>(msg: &M) -> alloc::vec::Vec<u8> {
    let mut buf = alloc::vec![0u8; 256];
    loop {
        if let Ok(n) = encode(msg, &mut buf) {
            buf.truncate(n);
            return buf;
        }
        let bigger = buf.len() * 2;
        buf.resize(bigger, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{AgentMessage, GoAway, Open, Refused, ServerMessage};

    #[test]
    fn encode_reports_a_small_buffer_instead_of_panicking() {
        let msg = ServerMessage::Open(Open { stream: "0123456789abcdef0123456789abcdef", service: "http" });
        let mut big = [0u8; 128];
        let n = encode(&msg, &mut big).unwrap();
        for len in 0..n {
            assert_eq!(encode(&msg, &mut big[..len]), Err(EncodeError::BufferTooSmall));
        }
    }

    #[test]
    fn decode_borrows_and_rejects_trailing_bytes() {
        let frame = br#"{"go_away":{"after_ms":250}}"#;
        assert_eq!(decode::<ServerMessage>(frame), Ok(ServerMessage::GoAway(GoAway { after_ms: 250 })));
        assert_eq!(decode::<ServerMessage>(br#"{"go_away":{"after_ms":250}}{}"#), Err(DecodeError::Invalid));
        assert_eq!(decode::<ServerMessage>(br#"{"launch":{}}"#), Err(DecodeError::Invalid));
    }

    #[test]
    fn refused_encodes_like_serde_json() {
        let msg = AgentMessage::Refused(Refused { stream: "ab", reason: "no route" });
        let mut buf = [0u8; 64];
        let n = encode(&msg, &mut buf).unwrap();
        assert_eq!(&buf[..n], serde_json::to_vec(&msg).unwrap().as_slice());
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn encode_vec_grows_past_its_first_guess() {
        let reason = "x".repeat(1000);
        let msg = AgentMessage::Refused(Refused { stream: "ab", reason: &reason });
        assert_eq!(encode_vec(&msg), serde_json::to_vec(&msg).unwrap());
    }
}
