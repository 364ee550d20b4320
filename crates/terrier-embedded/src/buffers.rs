//! All socket memory the agent uses, provided by the firmware (statics or
//! task-local arrays) and bounded by their lengths. Nothing else is buffered:
//! bytes are decoded in place and relayed piece by piece, so a 32 KiB frame
//! from the server passes through a 2 KiB buffer.

/// Largest WebSocket frame header a client writes: 2 + 8 length + 4 mask.
pub const FRAME_OVERHEAD: usize = 14;
/// Smallest useful buffer: holds a handshake response head or a `welcome`.
pub const MIN_BUFFER: usize = 256;

/// Recommended control socket sizes (2,816 bytes in all): `rx` 1 KiB holds the
/// handshake request and response heads, `msg` 1.5 KiB a `welcome` with a
/// dozen TCP services, `tx` 256 bytes a ping or a `refused`.
pub const CONTROL_RX: usize = 1024;
/// See [`CONTROL_RX`].
pub const CONTROL_MSG: usize = 1536;
/// See [`CONTROL_RX`].
pub const CONTROL_TX: usize = 256;
/// Bytes for one control socket with the recommended sizes.
pub const CONTROL_TOTAL: usize = CONTROL_RX + CONTROL_MSG + CONTROL_TX;

/// Recommended size of each of a data socket's four buffers; with the frame
/// header room that is 8,206 bytes per data socket.
pub const DATA_PART: usize = 2048;
/// Bytes for one data socket with the recommended sizes.
pub const DATA_TOTAL: usize = 4 * DATA_PART + FRAME_OVERHEAD;

/// Buffers of the control socket.
pub struct ControlBuffers<'b> {
    /// Bytes from the network not yet decoded (also holds the handshake).
    pub(crate) rx: &'b mut [u8],
    /// One decoded text message (`welcome`, `open`...); its size bounds the
    /// largest control message the device accepts.
    pub(crate) msg: &'b mut [u8],
    /// One encoded outgoing frame (ping, pong, `refused`, close).
    pub(crate) tx: &'b mut [u8],
}

impl<'b> ControlBuffers<'b> {
    /// Splits `buf` into the three control buffers in the recommended
    /// proportions (rx 4/11, msg 6/11, tx 1/11); `None` if a part would be
    /// smaller than [`MIN_BUFFER`] (so at least 2,816 bytes).
    pub fn split(buf: &'b mut [u8]) -> Option<Self> {
        let unit = buf.len() / 11;
        let (rx, rest) = buf.split_at_mut(unit * 4);
        let (msg, tx) = rest.split_at_mut(unit * 6);
        Self::new(rx, msg, tx)
    }

    /// Uses three separate buffers; `None` if one is smaller than [`MIN_BUFFER`].
    pub fn new(rx: &'b mut [u8], msg: &'b mut [u8], tx: &'b mut [u8]) -> Option<Self> {
        (rx.len() >= MIN_BUFFER && msg.len() >= MIN_BUFFER && tx.len() >= MIN_BUFFER).then_some(Self { rx, msg, tx })
    }
}

/// Buffers of one data socket (one visitor stream at a time).
pub struct DataBuffers<'b> {
    /// Bytes from the network not yet decoded (also holds the handshake).
    pub(crate) rx: &'b mut [u8],
    /// Decoded bytes on their way to the local service.
    pub(crate) down: &'b mut [u8],
    /// Bytes read from the local service, on their way to the server.
    pub(crate) up: &'b mut [u8],
    /// One encoded outgoing frame: `up` plus [`FRAME_OVERHEAD`].
    pub(crate) tx: &'b mut [u8],
}

impl<'b> DataBuffers<'b> {
    /// Splits `buf` into four equal parts (the last one [`FRAME_OVERHEAD`]
    /// larger); `None` below 4 × [`MIN_BUFFER`] + [`FRAME_OVERHEAD`] bytes.
    pub fn split(buf: &'b mut [u8]) -> Option<Self> {
        let part = buf.len().checked_sub(FRAME_OVERHEAD)? / 4;
        let (rx, rest) = buf.split_at_mut(part);
        let (down, rest) = rest.split_at_mut(part);
        let (up, tx) = rest.split_at_mut(part);
        Self::new(rx, down, up, tx)
    }

    /// Uses four separate buffers; `None` if one is smaller than
    /// [`MIN_BUFFER`] or `tx` is not at least `up` + [`FRAME_OVERHEAD`].
    pub fn new(rx: &'b mut [u8], down: &'b mut [u8], up: &'b mut [u8], tx: &'b mut [u8]) -> Option<Self> {
        let ok =
            [rx.len(), down.len(), up.len()].iter().all(|&n| n >= MIN_BUFFER) && tx.len() >= up.len() + FRAME_OVERHEAD;
        ok.then_some(Self { rx, down, up, tx })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommended_sizes_split_and_small_ones_do_not() {
        let mut c = [0u8; CONTROL_TOTAL];
        let c = ControlBuffers::split(&mut c).unwrap();
        assert!(c.rx.len() >= 1000 && c.msg.len() >= 1500 && c.tx.len() >= 256);
        let mut d = [0u8; DATA_TOTAL];
        let d = DataBuffers::split(&mut d).unwrap();
        assert_eq!((d.rx.len(), d.down.len(), d.up.len(), d.tx.len()), (2048, 2048, 2048, 2062));
        assert!(ControlBuffers::split(&mut [0u8; 2000]).is_none());
        assert!(DataBuffers::split(&mut [0u8; 1000]).is_none());
        assert!(DataBuffers::split(&mut [0u8; 5]).is_none());
    }
}
