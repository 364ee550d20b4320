//! Protocol constants. Each carries its unit in its name; servers and agents
//! may make the configurable ones smaller or larger, these are the defaults.

/// Sub-protocol named in `Sec-WebSocket-Protocol` on every terrier socket.
pub const SUBPROTOCOL: &str = "terrier.v1";

/// Most services (HTTP plus TCP) one device may announce.
pub const MAX_SERVICES: usize = 16;

/// Largest control (text) frame either side sends or accepts, in bytes.
pub const MAX_CONTROL_FRAME_BYTES: usize = 16 * 1024;

/// Largest binary frame a relay writes; readers accept up to their configured
/// maximum (default [`MAX_DATA_FRAME_BYTES`]).
pub const DATA_CHUNK_BYTES: usize = 32 * 1024;

/// Default maximum size of one data frame a peer accepts, in bytes.
pub const MAX_DATA_FRAME_BYTES: usize = 1024 * 1024;

/// Default interval between WebSocket pings on the control socket, in seconds.
pub const HEARTBEAT_INTERVAL_SECS: u32 = 20;

/// A peer that stays silent for this many heartbeat intervals is dead.
pub const HEARTBEAT_MISSES: u32 = 3;

/// Default time the server waits for the data socket of a stream, in seconds.
pub const STREAM_OPEN_TIMEOUT_SECS: u32 = 10;

/// Most 307 redirects an agent follows in one connection attempt.
pub const MAX_REDIRECT_HOPS: u8 = 3;

/// Length of a stream id or a session id: 128 random bits in lowercase hex.
pub const ID_HEX_LEN: usize = 32;
