//! The agent's configuration file (`terrier --config /etc/terrier/agent.toml`):
//! the same keys as the command-line flags, so a service can be set up with
//! a file and a one-line command. Flags (and their environment variables)
//! override the file; the merging happens in the binary.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One server URL or several (other nodes, tried in turn).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Servers {
    /// `server = "wss://tunnel.example.com"`
    One(String),
    /// `server = ["wss://a.example.com", "wss://b.example.com"]`
    Many(Vec<String>),
}

impl Servers {
    /// The URLs as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Servers::One(s) => vec![s],
            Servers::Many(v) => v,
        }
    }
}

/// One service value as written in the file: `"[HOST:]PORT"` or `8080`.
struct Service(String);

impl<'de> Deserialize<'de> for Service {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let one = d.deserialize_any(ServiceVisitor { list: false })?;
        Ok(Service(one.into_iter().next().unwrap_or_default()))
    }
}

/// Reads a service value, or with `list` a list of them too, as strings.
struct ServiceVisitor {
    /// Whether a list is welcome (`tcp`) or not (`http`, list items).
    list: bool,
}

impl<'de> serde::de::Visitor<'de> for ServiceVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a port number or a string such as \"127.0.0.1:8080\"")?;
        if self.list {
            f.write_str(", or a list of them")?;
        }
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(vec![s.to_owned()])
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(vec![n.to_string()])
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(vec![n.to_string()])
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if !self.list {
            return Err(serde::de::Error::invalid_type(serde::de::Unexpected::Seq, &self));
        }
        let mut all = Vec::new();
        while let Some(Service(one)) = seq.next_element()? {
            all.push(one);
        }
        Ok(all)
    }
}

/// `http = 8080` as well as `http = "8080"`.
fn one_service<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Service::deserialize(d).map(|Service(s)| Some(s))
}

/// `tcp = "22"` and `tcp = 22` as well as `tcp = ["22", "mqtt=1883"]`.
fn services<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(ServiceVisitor { list: true })
}

/// The keys of `agent.toml`; every one is optional. Documented in docs/AGENT.md.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--server`.
    pub server: Option<Servers>,
    /// `--name`.
    pub name: Option<String>,
    /// `--token` (prefer `token_file`: this file is often world-readable).
    pub token: Option<String>,
    /// `--token-file`.
    pub token_file: Option<PathBuf>,
    /// `--ca`.
    pub ca: Option<PathBuf>,
    /// `--proxy` (`"none"` ignores the proxy environment variables).
    pub proxy: Option<String>,
    /// `--http`: `"[HOST:]PORT"`, a URL, or a bare port number.
    #[serde(default, deserialize_with = "one_service")]
    pub http: Option<String>,
    /// `--tcp`, one entry per service: a list, or one entry alone; each a
    /// string or a bare port number.
    #[serde(default, deserialize_with = "services")]
    pub tcp: Vec<String>,
    /// `--pool`.
    pub pool: Option<u8>,
    /// `--show-requests`.
    pub show_requests: Option<bool>,
    /// `--backoff-max`, e.g. `"60s"`.
    pub backoff_max: Option<String>,
    /// `--connect-timeout`, e.g. `"10s"`.
    pub connect_timeout: Option<String>,
    /// `--output`: `"text"` or `"json"`.
    pub output: Option<String>,
    /// `--log`.
    pub log: Option<String>,
}

impl FileConfig {
    /// Reads and parses the file; errors name the file, the line and the key.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("--config {}, {e}", path.display()))
    }

    /// Parses TOML text. An error reads "line L, column C: message", then
    /// the line itself with the culprit underlined, then a suggestion for a
    /// misspelt key.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| explain(text, &e))
    }
}

/// Every key of the file, for suggestions.
const KEYS: &[&str] = &[
    "server",
    "name",
    "token",
    "token_file",
    "ca",
    "proxy",
    "http",
    "tcp",
    "pool",
    "show_requests",
    "backoff_max",
    "connect_timeout",
    "output",
    "log",
];

/// A TOML error as a few readable lines: where, what, and the line itself.
fn explain(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    let Some(span) = e.span() else { return message.to_owned() };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_no = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or_default();
    let width = text[start..span.end.min(text.len())].chars().count().clamp(1, line.len().max(1));
    let gutter = " ".repeat(line_no.to_string().len());
    let mut out = format!("line {line_no}, column {column}: {message}\n  {line_no} | {line}\n  {gutter} | ");
    out.push_str(&" ".repeat(column - 1));
    out.push_str(&"^".repeat(width));
    if let Some(key) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
        if let Some(near) = nearest_key(key) {
            out.push_str(&format!("\n  did you mean `{near}`?"));
        }
    }
    out
}

/// The known key closest to `typo`, if it is close.
fn nearest_key(typo: &str) -> Option<&'static str> {
    terrier_transport::suggest::nearest(typo, KEYS)
}

/// A configuration ready to run: the agent's, plus what the binary needs.
#[derive(Debug)]
pub struct Resolved {
    /// What the agent connects where.
    pub agent: crate::AgentConfig,
    /// `true` for JSON event lines.
    pub json: bool,
    /// The log filter.
    pub log: String,
    /// Settings that work but may not mean what the user meant, in words.
    pub warnings: Vec<String>,
}

/// Default server when neither flag nor file names one.
pub const DEFAULT_SERVER: &str = "http://localhost:8080";

impl FileConfig {
    /// `self` (the file) under `flags`: every key the flags set wins; `tcp`
    /// given on the command line replaces the file's list.
    pub fn overlay(self, flags: FileConfig) -> FileConfig {
        FileConfig {
            server: flags.server.or(self.server),
            name: flags.name.or(self.name),
            // A token on the command line or in TERRIER_TOKEN beats a file's token_file, and vice versa.
            token: flags.token.clone().or(if flags.token_file.is_some() { None } else { self.token }),
            token_file: if flags.token.is_some() { None } else { flags.token_file.or(self.token_file) },
            ca: flags.ca.or(self.ca),
            proxy: flags.proxy.or(self.proxy),
            http: flags.http.or(self.http),
            tcp: if flags.tcp.is_empty() { self.tcp } else { flags.tcp },
            pool: flags.pool.or(self.pool),
            show_requests: flags.show_requests.or(self.show_requests),
            backoff_max: flags.backoff_max.or(self.backoff_max),
            connect_timeout: flags.connect_timeout.or(self.connect_timeout),
            output: flags.output.or(self.output),
            log: flags.log.or(self.log),
        }
    }

    /// Checks every value and builds the agent configuration. `env` looks up
    /// environment variables (the proxy variables, the host name).
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Result<Resolved, String> {
        self.resolve_with(env, true)
    }

    /// [`FileConfig::resolve`]; without `need_services`, exposing nothing
    /// is allowed (`terrier check` may run without `--http`/`--tcp`).
    pub fn resolve_with(self, env: impl Fn(&str) -> Option<String>, need_services: bool) -> Result<Resolved, String> {
        use crate::{AgentConfig, ProxyConfig, Service, TlsConfig, Token};

        let servers = self.server.map(Servers::into_vec).unwrap_or_else(|| vec![DEFAULT_SERVER.into()]);
        let mut urls = Vec::new();
        for s in servers.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
            let url = url::Url::parse(s).map_err(|e| format!("server {s:?}: {e}"))?;
            if !matches!(url.scheme(), "http" | "https" | "ws" | "wss") || url.host_str().is_none() {
                return Err(format!("server {s:?}: use http://, https://, ws:// or wss:// with a host"));
            }
            urls.push(url);
        }
        let mut urls = urls.into_iter();
        let server = urls.next().ok_or("give a server URL (--server)")?;

        let name = match self.name.or_else(|| default_name(&env)) {
            Some(name) => name,
            None => return Err("no --name given and the host name is not a valid device name".into()),
        };
        if !terrier_proto::name::is_valid_name(&name) {
            return Err(format!("--name {name:?}: use 1-63 of [a-z0-9-], not starting or ending with '-'"));
        }

        let http = match self.http {
            Some(h) => Some(Service::parse_http(&h).map_err(|e| format!("--http {e}"))?),
            None => None,
        };
        let tcp = self
            .tcp
            .iter()
            .map(|t| Service::parse_tcp(t).map_err(|e| format!("--tcp {t:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if need_services && http.is_none() && tcp.is_empty() {
            return Err("nothing to expose: give --http [HOST:]PORT and/or --tcp [ID=][HOST:]PORT".into());
        }
        crate::service::check_unique(&tcp)?;
        let warnings =
            self.tcp.iter().zip(&tcp).filter_map(|(raw, s)| crate::service::tcp_host_warning(raw, s)).collect();

        let token = match (self.token, self.token_file) {
            (Some(raw), _) => Some(Token::new(&raw, "--token")?),
            (None, Some(path)) => Some(Token::from_file(&path)?),
            (None, None) => None,
        };
        let tls = self.ca.as_deref().map(TlsConfig::from_ca_file).transpose()?;
        let proxy = match self.proxy.as_deref().map(str::trim) {
            Some("none" | "direct" | "") => ProxyConfig::default(),
            Some(raw) => {
                let url = url::Url::parse(raw).map_err(|e| format!("--proxy: {e}"))?;
                ProxyConfig::all(url).map_err(|e| format!("--proxy: {e}"))?
            }
            None => ProxyConfig::from_env(&env)?,
        };
        let duration = |key: &str, value: Option<String>, default: std::time::Duration| match value {
            Some(v) => humantime::parse_duration(&v).map_err(|e| format!("--{key} {v:?}: {e}")),
            None => Ok(default),
        };
        let defaults = AgentConfig::default();
        let backoff_max = duration("backoff-max", self.backoff_max, defaults.backoff_max)?;
        let connect_timeout = duration("connect-timeout", self.connect_timeout, defaults.connect_timeout)?;
        if connect_timeout.is_zero() {
            return Err("--connect-timeout must be more than 0".into());
        }
        let pool = self.pool.unwrap_or(0);
        if pool > 16 {
            return Err(format!("--pool {pool}: at most 16"));
        }
        let json = match self.output.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => return Err(format!("--output {other:?}: use text or json")),
        };
        Ok(Resolved {
            agent: AgentConfig {
                server,
                fallback_servers: urls.collect(),
                name,
                http,
                tcp,
                backoff_max,
                connect_timeout,
                pool: pool.into(),
                show_requests: self.show_requests.unwrap_or(false),
                token,
                proxy,
                tls,
                ..defaults
            },
            json,
            log: self.log.unwrap_or_else(|| "info".into()),
            warnings,
        })
    }
}

/// This machine's host name as a device name, if it is a valid one.
fn default_name(env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| env("COMPUTERNAME"))
        .or_else(|| env("HOSTNAME"))?;
    let name: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let name = name.trim_matches('-').to_owned();
    terrier_proto::name::is_valid_name(&name).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples(kind: &str) -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/agent").join(kind);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "examples in {}", dir.display());
        files
    }

    /// Example files refer to files next to them (token, CA) by relative path.
    fn load_example(path: &Path) -> Result<Resolved, String> {
        let mut file = FileConfig::load(path)?;
        let base = path.parent().unwrap();
        file.token_file = file.token_file.map(|p| base.join(p));
        file.ca = file.ca.map(|p| base.join(p));
        file.resolve(|_| None)
    }

    #[test]
    fn every_valid_example_resolves() {
        for path in examples("valid") {
            let resolved = load_example(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!resolved.agent.name.is_empty(), "{}", path.display());
        }
    }

    #[test]
    fn every_invalid_example_is_refused_with_its_reason() {
        for path in examples("invalid") {
            let text = std::fs::read_to_string(&path).unwrap();
            // Each invalid example's first line is "# expect: <part of the error>".
            let expect = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).unwrap_or_else(|| {
                panic!("{} starts with '# expect: ...'", path.display());
            });
            let err = load_example(&path).err().unwrap_or_else(|| panic!("{} is refused", path.display()));
            assert!(err.contains(expect), "{}: {err:?} should mention {expect:?}", path.display());
        }
    }

    #[test]
    fn flags_override_the_file_and_tcp_lists_replace() {
        let file = FileConfig::parse(
            r#"
            server = ["ws://a:1", "ws://b:2"]
            name = "from-file"
            http = "80"
            tcp = ["22", "mqtt=1883"]
            pool = 2
            token = "file-token"
            "#,
        )
        .unwrap();
        let flags = FileConfig {
            name: Some("from-flag".into()),
            tcp: vec!["2222".into()],
            token_file: None,
            ..FileConfig::default()
        };
        let resolved = file.overlay(flags).resolve(|_| None).unwrap();
        let agent = resolved.agent;
        assert_eq!(agent.name, "from-flag");
        assert_eq!(agent.server.as_str(), "ws://a:1/");
        assert_eq!(agent.fallback_servers.len(), 1);
        assert_eq!(agent.tcp.len(), 1);
        assert_eq!(agent.tcp[0].id, "2222");
        assert_eq!(agent.pool, 2);
        assert!(agent.token.is_some());
    }

    #[test]
    fn toml_errors_show_the_line_and_suggest_a_key() {
        let err = FileConfig::parse("name = \"a\"\nhtp = \"80\"\n").unwrap_err();
        let lines: Vec<&str> = err.lines().collect();
        assert!(lines[0].starts_with("line 2, column 1: unknown field `htp`"), "{err}");
        assert_eq!(lines[1], "  2 | htp = \"80\"", "{err}");
        assert_eq!(lines[2], "    | ^^^", "{err}");
        assert_eq!(lines[3], "  did you mean `http`?", "{err}");
        let err = FileConfig::parse("name = \"a\"\nbackoff_max = \n").unwrap_err();
        assert!(err.starts_with("line 2, column "), "{err}");
        assert_eq!(nearest_key("zzzzzz"), None);
    }

    #[test]
    fn services_may_be_bare_ports_and_tcp_one_entry() {
        let file = FileConfig::parse("http = 8001\ntcp = \"22\"\n").unwrap();
        assert_eq!((file.http.as_deref(), file.tcp), (Some("8001"), vec!["22".to_owned()]));
        let file = FileConfig::parse("tcp = [22, \"mqtt=1883\"]\n").unwrap();
        assert_eq!(file.tcp, ["22", "mqtt=1883"]);
        let err = FileConfig::parse("http = [80]\n").unwrap_err();
        assert!(err.contains("a port number or a string"), "{err}");
    }

    #[test]
    fn a_token_file_flag_beats_a_token_in_the_file() {
        let file = FileConfig { token: Some("file-token".into()), ..FileConfig::default() };
        let flags = FileConfig { token_file: Some("/run/token".into()), ..FileConfig::default() };
        let merged = file.overlay(flags);
        assert!(merged.token.is_none());
        assert_eq!(merged.token_file.as_deref(), Some(Path::new("/run/token")));
    }

    #[test]
    fn proxy_none_ignores_the_environment() {
        let env = |k: &str| (k == "HTTPS_PROXY").then(|| "http://p:3128".to_owned());
        let base = FileConfig { name: Some("d".into()), http: Some("80".into()), ..FileConfig::default() };
        let with_env = base.clone().resolve(env).unwrap();
        assert!(with_env.agent.proxy.https.is_some());
        let none = FileConfig { proxy: Some("none".into()), ..base }.resolve(env).unwrap();
        assert!(none.agent.proxy.https.is_none());
    }
}
