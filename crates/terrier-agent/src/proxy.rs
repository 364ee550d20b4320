//! HTTP proxies: which proxy (if any) a server URL goes through — `--proxy`
//! or the usual `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` variables — and the
//! `CONNECT` request that turns a proxy connection into a tunnel to the
//! server. TLS for `wss://` then runs inside the tunnel, end to end.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

/// Largest proxy answer head read before giving up (a proxy error page may
/// follow it; we never read that far).
const MAX_ANSWER_HEAD_BYTES: usize = 8 * 1024;

/// The proxies of an agent.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    /// Proxy for `ws://`/`http://` servers.
    pub http: Option<Url>,
    /// Proxy for `wss://`/`https://` servers.
    pub https: Option<Url>,
    /// Hosts reached directly.
    pub no_proxy: NoProxy,
}

impl ProxyConfig {
    /// One proxy for every server (`--proxy URL`).
    pub fn all(url: Url) -> Result<Self, String> {
        check_proxy_url(&url)?;
        Ok(Self { http: Some(url.clone()), https: Some(url), no_proxy: NoProxy::default() })
    }

    /// From environment variables (`var` looks one up): `HTTPS_PROXY`,
    /// `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, each also in lowercase
    /// (lowercase wins, as in curl).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| var(&name.to_ascii_lowercase()).or_else(|| var(name)).filter(|v| !v.trim().is_empty());
        let parse = |name: &str| -> Result<Option<Url>, String> {
            let Some(raw) = get(name) else { return Ok(None) };
            let raw = if raw.contains("://") { raw } else { format!("http://{raw}") };
            let url = Url::parse(raw.trim()).map_err(|e| format!("{name}: {e}"))?;
            check_proxy_url(&url).map_err(|e| format!("{name}: {e}"))?;
            Ok(Some(url))
        };
        let all = parse("ALL_PROXY")?;
        Ok(Self {
            http: parse("HTTP_PROXY")?.or_else(|| all.clone()),
            https: parse("HTTPS_PROXY")?.or(all),
            no_proxy: NoProxy::parse(&get("NO_PROXY").unwrap_or_default()),
        })
    }

    /// The proxy for a server URL, or `None` to connect directly.
    pub fn for_url(&self, server: &Url) -> Option<&Url> {
        let host = server.host_str()?.trim_start_matches('[').trim_end_matches(']');
        if self.no_proxy.matches(host) {
            return None;
        }
        match server.scheme() {
            "https" | "wss" => self.https.as_ref(),
            _ => self.http.as_ref(),
        }
    }
}

fn check_proxy_url(url: &Url) -> Result<(), String> {
    if url.scheme() != "http" {
        return Err(format!("proxy {}: only http:// proxies are supported (CONNECT)", redact(url)));
    }
    if url.host_str().is_none() {
        return Err("proxy URL has no host".into());
    }
    Ok(())
}

/// A proxy URL fit for logs: the password replaced by `***`.
pub fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// The `NO_PROXY` list: hosts (and their subdomains) reached without the proxy.
#[derive(Debug, Clone, Default)]
pub struct NoProxy {
    /// Lowercase entries without leading dots; `*` means every host.
    entries: Vec<String>,
}

impl NoProxy {
    /// Parses a comma- or space-separated list (`localhost,.corp.example,10.0.0.1`).
    pub fn parse(list: &str) -> Self {
        let entries = list
            .split([',', ' '])
            .map(|e| e.trim().trim_start_matches("*.").trim_start_matches('.').to_ascii_lowercase())
            // A port in an entry (host:1234) is ignored: the host decides.
            .map(|e| match e.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
                    host.to_owned()
                }
                _ => e,
            })
            .filter(|e| !e.is_empty())
            .collect();
        Self { entries }
    }

    /// Whether `host` is reached directly: it equals an entry or is a subdomain of one.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.entries.iter().any(|e| {
            e == "*"
                || host == *e
                || (host.len() > e.len()
                    && host.ends_with(e.as_str())
                    && host.as_bytes()[host.len() - e.len() - 1] == b'.')
        })
    }
}

/// Why a proxy did not open the tunnel.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The connection to the proxy broke.
    #[error("proxy {proxy}: {source}")]
    Io {
        /// The proxy (password redacted).
        proxy: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The proxy answered CONNECT with a status other than 2xx.
    #[error("proxy {proxy} refused CONNECT {target}: {status} {reason}")]
    Refused {
        /// The proxy (password redacted).
        proxy: String,
        /// host:port asked for.
        target: String,
        /// HTTP status.
        status: u16,
        /// The status line's reason phrase.
        reason: String,
    },
    /// The proxy's answer was not HTTP.
    #[error("proxy {proxy}: bad answer to CONNECT: {what}")]
    BadAnswer {
        /// The proxy (password redacted).
        proxy: String,
        /// What was wrong.
        what: String,
    },
    /// No answer in time.
    #[error("proxy {proxy}: no answer to CONNECT within {0:?}", .timeout)]
    Timeout {
        /// The proxy (password redacted).
        proxy: String,
        /// How long we waited.
        timeout: Duration,
    },
}

/// Asks the proxy at the other end of `stream` for a tunnel to `host:port`
/// (with Basic credentials from the proxy URL's user and password, if any).
/// On success the stream carries bytes to and from the target.
pub async fn connect(
    mut stream: TcpStream,
    proxy: &Url,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, ProxyError> {
    let shown = redact(proxy);
    let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let request = connect_request(proxy, &target);
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        read_answer_head(&mut stream).await
    };
    let head = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return Err(ProxyError::Timeout { proxy: shown, timeout }),
        Ok(Err(source)) => return Err(ProxyError::Io { proxy: shown, source }),
        Ok(Ok(head)) => head,
    };
    let (status, reason) = parse_status(&head).ok_or_else(|| ProxyError::BadAnswer {
        proxy: shown.clone(),
        what: format!("{:.80}", String::from_utf8_lossy(&head)),
    })?;
    if !(200..300).contains(&status) {
        return Err(ProxyError::Refused { proxy: shown, target, status, reason });
    }
    Ok(stream)
}

/// The CONNECT request head.
fn connect_request(proxy: &Url, target: &str) -> String {
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if !proxy.username().is_empty() {
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let credentials = format!("{}:{}", decode(proxy.username()), decode(proxy.password().unwrap_or("")));
        request.push_str(&format!(
            "Proxy-Authorization: Basic {}\r\n",
            data_encoding::BASE64.encode(credentials.as_bytes())
        ));
    }
    request.push_str("\r\n");
    request
}

/// Reads the answer head up to the blank line. Nothing after it is read: the
/// server speaks only after we do (TLS ClientHello or the WebSocket request).
async fn read_answer_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    // Byte by byte, so not a byte of the tunnel is consumed; the head is short.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_ANSWER_HEAD_BYTES {
            return Err(std::io::Error::other("answer head too long"));
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "proxy closed the connection"));
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// `HTTP/1.1 200 Connection established` -> (200, "Connection established").
fn parse_status(head: &[u8]) -> Option<(u16, String)> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some((status, parts.next().unwrap_or("").trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn env_picks_the_proxy_by_scheme_and_honours_no_proxy() {
        let config = ProxyConfig::from_env(env(&[
            ("HTTPS_PROXY", "http://secure:3128"),
            ("http_proxy", "plain:8080"),
            ("NO_PROXY", "localhost, .corp.example,10.1.2.3:443"),
        ]))
        .unwrap();
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(config.for_url(&url("wss://t.example.com")).unwrap().as_str(), "http://secure:3128/");
        assert_eq!(config.for_url(&url("http://t.example.com")).unwrap().as_str(), "http://plain:8080/");
        assert!(config.for_url(&url("wss://localhost:8443")).is_none());
        assert!(config.for_url(&url("wss://tunnel.corp.example")).is_none());
        assert!(config.for_url(&url("wss://corp.example")).is_none());
        assert!(config.for_url(&url("wss://notcorp.example")).is_some());
        assert!(config.for_url(&url("ws://10.1.2.3")).is_none());
    }

    #[test]
    fn lowercase_wins_and_star_disables() {
        let config =
            ProxyConfig::from_env(env(&[("HTTPS_PROXY", "http://upper:1"), ("https_proxy", "http://lower:2")]))
                .unwrap();
        assert_eq!(config.https.unwrap().host_str(), Some("lower"));
        let none = ProxyConfig::from_env(env(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "*")])).unwrap();
        assert!(none.for_url(&Url::parse("wss://any.where").unwrap()).is_none());
    }

    #[test]
    fn only_http_proxies_are_accepted() {
        let err = ProxyConfig::all(Url::parse("socks5://p:1080").unwrap()).unwrap_err();
        assert!(err.contains("http://"), "{err}");
    }

    #[test]
    fn connect_request_carries_basic_credentials_and_redacts_in_logs() {
        let proxy = Url::parse("http://us%40er:p%3Ass@proxy:3128").unwrap();
        let request = connect_request(&proxy, "t.example.com:443");
        assert!(request.starts_with("CONNECT t.example.com:443 HTTP/1.1\r\nHost: t.example.com:443\r\n"));
        let expected = data_encoding::BASE64.encode(b"us@er:p:ss");
        assert!(request.contains(&format!("Proxy-Authorization: Basic {expected}\r\n")), "{request}");
        assert!(!redact(&proxy).contains("p%3Ass"), "{}", redact(&proxy));
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Some((200, "Connection established".into()))
        );
        assert_eq!(parse_status(b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n").unwrap().0, 407);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
    }
}
