//! The services a device exposes, as given on the command line:
//! `--http [HOST:]PORT` and `--tcp [ID=][HOST:]PORT`. HOST lets a gateway
//! expose other machines of its LAN; it defaults to 127.0.0.1.

use std::fmt;
use std::str::FromStr;

use terrier_proto::handshake::HTTP_SERVICE;
use terrier_proto::name::is_valid_service_id;

/// Where a service is reached on the device side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Target {
    /// Whether the service is on this device's loopback interface (an IP
    /// address in 127.0.0.0/8 or ::1, or `localhost`).
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// A warning for a `--tcp` value whose host is one bare word, like `ssh`
/// in `ssh:22`: users write that meaning a service named `ssh`, but the
/// rule is `ID=` for the name and `HOST:` for the host, so it names a host.
pub fn tcp_host_warning(raw: &str, service: &Service) -> Option<String> {
    let host = &service.target.host;
    let bare_word = !host.contains('.') && !host.contains(':') && !service.target.is_loopback();
    (bare_word && !raw.contains('=')).then(|| {
        format!(
            "--tcp {raw:?} connects to the host named {host:?} on port {port}; \
             to name the service {host:?} instead, write --tcp {host}={port}",
            port = service.target.port
        )
    })
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Target {
    type Err = String;

    /// Parses `PORT`, `HOST:PORT` or `[IPV6]:PORT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = match s.rsplit_once(':') {
            None => ("127.0.0.1", s),
            Some((host, port)) => (host.trim_start_matches('[').trim_end_matches(']'), port),
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?}: expected [HOST:]PORT with PORT in 1-65535"))?;
        if host.is_empty() {
            return Err(format!("{s:?}: empty host"));
        }
        if host.contains('/') {
            return Err(format!("{s:?}: expected [HOST:]PORT, not a URL"));
        }
        Ok(Self { host: host.to_owned(), port })
    }
}

/// One service: the id the server knows it by, and its local target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `http`, or a TCP service id (default: the port number).
    pub id: String,
    /// Where to connect on the device side.
    pub target: Target,
}

impl Service {
    /// Parses a `--tcp` value: `[ID=][HOST:]PORT`.
    pub fn parse_tcp(s: &str) -> Result<Self, String> {
        let (id, target) = match s.split_once('=') {
            Some((id, target)) => (Some(id), target),
            None => (None, s),
        };
        let target: Target = target.parse()?;
        let id = id.map(str::to_owned).unwrap_or_else(|| target.port.to_string());
        if !is_valid_service_id(&id) {
            return Err(format!("{s:?}: service id {id:?} must be 1-32 of [a-z0-9_-] and not \"http\""));
        }
        Ok(Self { id, target })
    }

    /// Parses an `--http` value: `[HOST:]PORT`, or the URL a browser would
    /// use for the service, `http://HOST[:PORT][/]` (port 80 by default).
    pub fn parse_http(s: &str) -> Result<Self, String> {
        if !s.contains("://") {
            return Ok(Self::http(s.parse()?));
        }
        let url = url::Url::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
        match url.scheme() {
            "http" => {}
            // The server speaks plain HTTP to the device's service.
            "https" => {
                return Err(format!(
                    "{s:?}: the agent forwards plain HTTP; a device that serves HTTPS itself \
                     is exposed with --tcp tls=HOST:PORT (TLS passthrough)"
                ))
            }
            other => return Err(format!("{s:?}: {other}:// is not HTTP; use [HOST:]PORT or http://HOST:PORT")),
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || !url.username().is_empty() {
            return Err(format!("{s:?}: give only http://HOST:PORT; visitors' paths are passed through as they are"));
        }
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let port = url.port_or_known_default().unwrap_or(80);
        Ok(Self::http(Target { host: host.to_owned(), port }))
    }

    /// The HTTP service at `target`.
    pub fn http(target: Target) -> Self {
        Self { id: HTTP_SERVICE.to_owned(), target }
    }
}

/// Checks that no two TCP services share an id.
pub fn check_unique(tcp: &[Service]) -> Result<(), String> {
    for (i, a) in tcp.iter().enumerate() {
        if let Some(b) = tcp[i + 1..].iter().find(|b| b.id == a.id) {
            return Err(format!(
                "--tcp {} and --tcp {} both get service id {:?}; name one: --tcp other={}",
                a.target, b.target, a.id, b.target
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!("22".parse::<Target>().unwrap(), Target { host: "127.0.0.1".into(), port: 22 });
        assert_eq!("192.168.1.7:22".parse::<Target>().unwrap().host, "192.168.1.7");
        assert_eq!("[::1]:80".parse::<Target>().unwrap().host, "::1");
        assert_eq!("[::1]:80".parse::<Target>().unwrap().to_string(), "[::1]:80");
        assert!("0".parse::<Target>().is_err());
        assert!("70000".parse::<Target>().is_err());
        assert!(":80".parse::<Target>().is_err());
        assert!("host:".parse::<Target>().is_err());
    }

    #[test]
    fn loopback_targets_are_recognised() {
        for target in ["22", "127.0.0.9:22", "[::1]:22", "localhost:22", "LOCALHOST:22"] {
            assert!(target.parse::<Target>().unwrap().is_loopback(), "{target}");
        }
        for target in ["192.168.1.7:22", "[fe80::1]:22", "localhost.example:22", "gateway:22"] {
            assert!(!target.parse::<Target>().unwrap().is_loopback(), "{target}");
        }
    }

    #[test]
    fn tcp_services_get_ids() {
        assert_eq!(Service::parse_tcp("22").unwrap().id, "22");
        let s = Service::parse_tcp("cam=192.168.1.9:554").unwrap();
        assert_eq!((s.id.as_str(), s.target.port), ("cam", 554));
        assert!(Service::parse_tcp("http=80").is_err());
        assert!(Service::parse_tcp("Bad=80").is_err());
    }

    #[test]
    fn http_services_take_a_url_too() {
        let target = |s: &str| Service::parse_http(s).map(|s| s.target.to_string());
        assert_eq!(target("8001").unwrap(), "127.0.0.1:8001");
        assert_eq!(target("http://127.0.0.1:8001").unwrap(), "127.0.0.1:8001");
        assert_eq!(target("http://192.168.1.5/").unwrap(), "192.168.1.5:80");
        assert_eq!(target("http://[::1]:8080").unwrap(), "[::1]:8080");
        assert!(target("https://127.0.0.1:8443").unwrap_err().contains("--tcp tls="));
        assert!(target("http://127.0.0.1:8001/app").unwrap_err().contains("only http://HOST:PORT"));
        assert!(target("ftp://127.0.0.1:21").unwrap_err().contains("not HTTP"));
        assert!(Service::parse_tcp("http://127.0.0.1:22").unwrap_err().contains("not a URL"));
    }

    #[test]
    fn a_bare_word_host_in_tcp_is_questioned() {
        let warning = |raw: &str| tcp_host_warning(raw, &Service::parse_tcp(raw).unwrap());
        assert!(warning("ssh:22").unwrap().contains("write --tcp ssh=22"));
        assert!(warning("gateway:22").is_some());
        for clear in ["22", "ssh=22", "ssh=gateway:22", "192.168.1.7:22", "nas.lan:22", "localhost:22", "[::1]:22"] {
            assert_eq!(warning(clear), None, "{clear}");
        }
    }

    #[test]
    fn duplicate_ids_are_explained() {
        let tcp = [Service::parse_tcp("10.0.0.1:22").unwrap(), Service::parse_tcp("10.0.0.2:22").unwrap()];
        assert!(check_unique(&tcp).unwrap_err().contains("name one"));
    }
}
