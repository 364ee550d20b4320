//! The HTTP side of the protocol: paths, query parameter names, status codes
//! and WebSocket close codes. `docs/PROTOCOL.md` explains each in prose.

/// Path of the control socket.
pub const CONTROL_PATH: &str = "/v1/control";
/// Path of a data socket.
pub const DATA_PATH: &str = "/v1/data";

/// Control socket: the device name (`name` rules in [`crate::name`]).
pub const PARAM_NAME: &str = "name";
/// Control socket: present, and not `0`, when the device serves HTTP.
pub const PARAM_HTTP: &str = "http";
/// Control socket: comma-separated TCP service ids.
pub const PARAM_TCP: &str = "tcp";
/// Control socket: redirects already followed in this attempt.
pub const PARAM_HOPS: &str = "hops";
/// Control socket: agent software and version, e.g. `terrier/0.1.0`.
pub const PARAM_AGENT: &str = "agent";
/// Control socket: agent platform, e.g. `linux-x86_64`.
pub const PARAM_PLATFORM: &str = "platform";
/// Control socket: a random id the agent draws once per process (1-64 of
/// `[A-Za-z0-9_-]`), so the server tells the same agent coming back (from
/// a new address, say) from another agent using the same name.
pub const PARAM_INSTANCE: &str = "instance";
/// Control socket: `1` asks what the device would be given (a `200` with a
/// JSON `CheckAnswer`) without registering anything or replacing an agent
/// online with the name; services may then be left out.
pub const PARAM_CHECK: &str = "check";
/// Control socket: `1` asks the server to send a `request` message for each
/// visitor request it forwards to this device (for the agent to show).
pub const PARAM_REQUESTS: &str = "requests";
/// Data socket: the session id from `welcome`.
pub const PARAM_SESSION: &str = "session";
/// Data socket: the stream id from `open`.
pub const PARAM_STREAM: &str = "stream";
/// Data socket: present (`1`) for an idle pooled socket awaiting `assign`.
pub const PARAM_POOL: &str = "pool";
/// Pooled data socket: `1` when the agent takes the socket back after a
/// stream that ended cleanly, to carry the next `assign`.
pub const PARAM_REUSE: &str = "reuse";

/// Service id of the device's HTTP service in `open`.
pub const HTTP_SERVICE: &str = "http";

/// HTTP status codes a handshake may end with besides `101`.
pub mod status {
    /// The answer to a `check=1` handshake.
    pub const OK: u16 = 200;
    /// Repeat the handshake at `Location`: another node is less loaded, or
    /// holds the name.
    pub const REDIRECT: u16 = 307;
    /// Bad name, bad service list or a malformed request.
    pub const BAD_REQUEST: u16 = 400;
    /// Missing or wrong credential.
    pub const UNAUTHORIZED: u16 = 401;
    /// Unknown, expired, already used or foreign stream id.
    pub const NOT_FOUND: u16 = 404;
    /// The name is online elsewhere and takeover was refused.
    pub const CONFLICT: u16 = 409;
    /// A limit was reached (too many handshakes from one source).
    pub const TOO_MANY_REQUESTS: u16 = 429;
    /// No capacity, no free port, or the store is unavailable.
    pub const UNAVAILABLE: u16 = 503;
}

/// WebSocket close codes (RFC 6455 private range 4000-4999) the server uses
/// on a control socket, so the agent can tell why it was dropped.
pub mod close {
    /// The same device connected again; this socket was replaced.
    pub const REPLACED: u16 = 4000;
    /// The server is shutting down; reconnect (possibly elsewhere).
    pub const GOING_AWAY: u16 = 4001;
    /// The peer broke the protocol (bad frame, unknown message).
    pub const PROTOCOL_ERROR: u16 = 4002;
    /// The peer missed its heartbeats.
    pub const HEARTBEAT_TIMEOUT: u16 = 4003;
    /// The device's token was revoked; reconnecting will get 401 until the
    /// operator gives it a new one.
    pub const REVOKED: u16 = 4004;
    /// The operator disconnected the device (admin API); it may reconnect.
    pub const DISCONNECTED: u16 = 4005;
}
