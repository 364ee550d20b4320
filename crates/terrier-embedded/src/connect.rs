//! Reaching the server: the firmware's "connect to host:port" and the
//! [`Endpoint`] it is asked for (the configured server, or the node a `307`
//! redirect pointed at).

use core::fmt::Write as _;

use embedded_io_async::{Read, Write};
use heapless::String;

/// Longest server host name kept (a `307` `Location` with a longer host is an error).
pub const MAX_HOST_LEN: usize = 96;

/// Where to connect: host (DNS name or IP literal, without brackets), port,
/// and whether the connection must be TLS (`https://`/`wss://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address literal.
    pub host: String<MAX_HOST_LEN>,
    /// TCP port.
    pub port: u16,
    /// The URL asked for TLS; a connector without TLS should refuse it.
    pub tls: bool,
}

impl Endpoint {
    /// An endpoint from its parts; `None` when `host` is longer than [`MAX_HOST_LEN`].
    pub fn new(host: &str, port: u16, tls: bool) -> Option<Self> {
        Some(Self { host: String::try_from(host).ok()?, port, tls })
    }

    /// Parses a base URL as found in a `307` `Location`: `http://`, `https://`,
    /// `ws://` or `wss://`, a host (IPv6 in brackets), an optional port, and an
    /// ignored path.
    pub fn parse_url(url: &str) -> Option<Self> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://").or_else(|| url.strip_prefix("ws://")) {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://").or_else(|| url.strip_prefix("wss://")) {
            (true, r)
        } else {
            return None;
        };
        let authority = rest.split('/').next().unwrap_or("");
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            match after.strip_prefix(':') {
                Some(p) => (host, p.parse().ok()?),
                None if after.is_empty() => (host, default_port),
                None => return None,
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().ok()?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return None;
        }
        Self::new(host, port, tls)
    }

    /// The `Host` header value: the port is left out when it is the scheme's default.
    pub(crate) fn host_header(&self) -> String<{ MAX_HOST_LEN + 8 }> {
        let mut s = String::new();
        let bracket = self.host.contains(':');
        let _ = match (bracket, self.port == if self.tls { 443 } else { 80 }) {
            (true, true) => write!(s, "[{}]", self.host),
            (true, false) => write!(s, "[{}]:{}", self.host, self.port),
            (false, true) => write!(s, "{}", self.host),
            (false, false) => write!(s, "{}:{}", self.host, self.port),
        };
        s
    }
}

/// Opens byte streams to the server. Implemented by the firmware over its
/// network stack; every control and data socket is one `connect`.
pub trait Connect {
    /// One open connection. Its `read` must be cancel-safe (dropping a pending
    /// read loses no bytes), as embassy-net's and tokio's are: the agent waits
    /// on a read and a timer at once.
    type Conn<'a>: Read + Write
    where
        Self: 'a;
    /// Why a connection could not be opened (DNS, refused, TLS unsupported...).
    type Error: core::fmt::Debug;

    /// Connects to `to`; with `to.tls`, the returned stream must be TLS.
    async fn connect<'a>(&'a self, to: &Endpoint) -> Result<Self::Conn<'a>, Self::Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redirect_locations() {
        let e = Endpoint::parse_url("http://10.0.0.2:8081/").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("10.0.0.2", 8081, false));
        let e = Endpoint::parse_url("wss://node-b.example.com").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("node-b.example.com", 443, true));
        let e = Endpoint::parse_url("http://[::1]:9000/x").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        assert_eq!(e.host_header().as_str(), "[::1]:9000");
        assert!(Endpoint::parse_url("ftp://x").is_none());
        assert!(Endpoint::parse_url("http://:80").is_none());
        assert!(Endpoint::parse_url("http://host:99999").is_none());
    }

    #[test]
    fn host_header_leaves_out_default_ports() {
        assert_eq!(Endpoint::new("t.example.com", 80, false).unwrap().host_header().as_str(), "t.example.com");
        assert_eq!(Endpoint::new("127.0.0.1", 8080, false).unwrap().host_header().as_str(), "127.0.0.1:8080");
    }
}
