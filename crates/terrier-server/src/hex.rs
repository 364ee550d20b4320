//! Lowercase hex for the digests and ids terrierd writes and reads (token
//! hashes, envelope MACs and nonces, access rule hashes). It imports nothing
//! else of the crate, so any module may use it.

/// `bytes` as lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    text
}

/// Exactly `N` bytes from `2 * N` hex digits (either case); `None` otherwise.
pub fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_goes_both_ways_and_refuses_bad_digits() {
        assert_eq!(super::encode(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(super::decode::<3>("00ABff"), Some([0x00, 0xab, 0xff]));
        assert_eq!(super::decode::<3>("00abf"), None);
        assert_eq!(super::decode::<2>("zz00"), None);
        assert_eq!(super::decode::<1>("é"), None);
    }
}
