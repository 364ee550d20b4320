//! What the device announces (name, services, credential) and the timing of
//! its reconnects, heartbeats and timeouts, checked once by [`Config::validate`]
//! with the same name rules the server applies.

use terrier_proto::limits::MAX_SERVICES;
use terrier_proto::name::{is_valid_name, is_valid_service_id};

use crate::connect::Endpoint;

/// Timeouts and backoff, in milliseconds. The defaults follow `docs/PROTOCOL.md`
/// §5 (full jitter from 0.5 s doubling to 60 s, reset after a stable minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// First backoff ceiling after a failed or dropped connection.
    pub backoff_base_ms: u32,
    /// Largest backoff ceiling.
    pub backoff_max_ms: u32,
    /// A control socket that lived this long resets the backoff.
    pub stable_after_ms: u32,
    /// Connect plus WebSocket handshake (and `welcome`) must finish within this.
    pub handshake_timeout_ms: u32,
    /// A data socket with no bytes either way for this long is closed, so a
    /// visitor's idle keep-alive connection does not hold one of the few data
    /// slots a microcontroller has.
    pub data_idle_timeout_ms: u32,
    /// After a clean end of a data stream, how long to wait for the server's
    /// Close frame.
    pub close_wait_ms: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
            stable_after_ms: 60_000,
            handshake_timeout_ms: 10_000,
            data_idle_timeout_ms: 30_000,
            close_wait_ms: 2_000,
        }
    }
}

/// The device's identity and services, borrowed from the firmware (usually
/// `&'static` strings from flash).
#[derive(Debug, Clone)]
pub struct Config<'a> {
    /// The server to dial first (redirects may move the session elsewhere).
    pub server: Endpoint,
    /// Device name: 1–63 of `[a-z0-9-]`, no leading or trailing `-`.
    pub name: &'a str,
    /// Device token, sent as `Authorization: Bearer <token>` on every handshake.
    pub token: Option<&'a str>,
    /// The device serves HTTP on its subdomain (service id `http`).
    pub http: bool,
    /// TCP service ids to announce (each gets a public port).
    pub tcp: &'a [&'a str],
    /// `os-arch` string sent as `platform=` (informational), e.g. `rp2040`.
    pub platform: &'a str,
    /// Backoff and timeouts.
    pub timing: Timing,
}

/// Why a [`Config`] is not usable; the server would answer `400` to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// The device name breaks the name rules.
    BadName,
    /// A TCP service id breaks the service id rules (or is `http`).
    BadServiceId,
    /// The same TCP service id twice.
    DuplicateService,
    /// Neither HTTP nor any TCP service.
    NoService,
    /// More than [`MAX_SERVICES`] services.
    TooManyServices,
    /// The token has characters that cannot go in an HTTP header.
    BadToken,
    /// The platform string is longer than 64 bytes or not URL-safe.
    BadPlatform,
}

impl<'a> Config<'a> {
    /// A config for `name` on `server` with no services yet and default timing.
    pub fn new(server: Endpoint, name: &'a str) -> Self {
        Self { server, name, token: None, http: false, tcp: &[], platform: "", timing: Timing::default() }
    }

    /// Checks every field with the protocol's rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_valid_name(self.name) {
            return Err(ConfigError::BadName);
        }
        if !self.http && self.tcp.is_empty() {
            return Err(ConfigError::NoService);
        }
        if usize::from(self.http) + self.tcp.len() > MAX_SERVICES {
            return Err(ConfigError::TooManyServices);
        }
        for (i, id) in self.tcp.iter().enumerate() {
            if !is_valid_service_id(id) {
                return Err(ConfigError::BadServiceId);
            }
            if self.tcp[..i].contains(id) {
                return Err(ConfigError::DuplicateService);
            }
        }
        if let Some(token) = self.token {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::BadToken);
            }
        }
        let url_safe = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
        if self.platform.len() > 64 || !self.platform.bytes().all(url_safe) {
            return Err(ConfigError::BadPlatform);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config<'static> {
        let mut c = Config::new(Endpoint::new("localhost", 8080, false).unwrap(), "led-board");
        c.http = true;
        c
    }

    #[test]
    fn accepts_what_the_server_accepts() {
        let mut c = config();
        assert_eq!(c.validate(), Ok(()));
        c.tcp = &["22", "mqtt"];
        c.token = Some("tok_abc.123");
        c.platform = "rp2040";
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn rejects_what_the_server_would_answer_400_to() {
        let mut c = config();
        c.name = "Bad_Name";
        assert_eq!(c.validate(), Err(ConfigError::BadName));
        let mut c = config();
        c.http = false;
        assert_eq!(c.validate(), Err(ConfigError::NoService));
        c.tcp = &["http"];
        assert_eq!(c.validate(), Err(ConfigError::BadServiceId));
        c.tcp = &["22", "22"];
        assert_eq!(c.validate(), Err(ConfigError::DuplicateService));
        c.tcp = &["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17"];
        assert_eq!(c.validate(), Err(ConfigError::TooManyServices));
        let mut c = config();
        c.token = Some("has space");
        assert_eq!(c.validate(), Err(ConfigError::BadToken));
        let mut c = config();
        c.platform = "a&b";
        assert_eq!(c.validate(), Err(ConfigError::BadPlatform));
    }
}
