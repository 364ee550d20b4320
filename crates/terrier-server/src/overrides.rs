//! Setting any configuration key without a file: `--set KEY=VALUE` (dotted
//! keys, e.g. `--set limits.max_pending_streams=64`) and environment
//! variables `TERRIERD__<KEY>` with `__` between section and key (e.g.
//! `TERRIERD__LIMITS__MAX_PENDING_STREAMS=64`, `TERRIERD__DRAIN_TIMEOUT=30s`).
//!
//! Overrides are applied to the TOML document before it is deserialised, so
//! they go through exactly the same types, unknown-key errors and validation
//! as the file. A value is read as TOML when it parses as one (`64`, `true`,
//! `["a"]`) and as a string otherwise (`30s`, `0.0.0.0:80`).

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::ServerConfig;

/// Prefix of the generic environment overrides (note the double underscore:
/// single-underscore `TERRIERD_*` variables belong to specific flags).
pub const ENV_PREFIX: &str = "TERRIERD__";

mod suggest;

/// Loads `file` (or nothing) with `overrides` (`(dotted key, value)`) applied.
/// An error names the file and line, or the override, that caused it, and
/// the nearest known key for a misspelt one.
pub fn load(file: Option<&Path>, overrides: &[(String, String)]) -> anyhow::Result<ServerConfig> {
    let mut doc: toml::Table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
            // The file alone first: only its own errors carry a line.
            if let Err(e) = toml::from_str::<ServerConfig>(&text) {
                anyhow::bail!("config {}{}: {}", path.display(), line_of(&text, &e), suggest::explain(e.message()));
            }
            toml::from_str(&text).with_context(|| format!("in config {}", path.display()))?
        }
        None => toml::Table::new(),
    };
    // Errors name the key, never the value: it may be a secret (a token
    // given through the environment under a mistyped name, say).
    for (key, value) in overrides {
        set(&mut doc, key, value).with_context(|| format!("override {key}"))?;
        // Each one on its way in, so an error names the override at fault.
        if let Err(e) = ServerConfig::deserialize(toml::Value::Table(doc.clone())) {
            anyhow::bail!("override {key}: {}", suggest::explain(e.message()));
        }
    }
    let config = ServerConfig::deserialize(toml::Value::Table(doc)).context("configuration")?;
    Ok(config)
}

/// `, line N` of the error in `text`, when it has a place.
fn line_of(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else { return String::new() };
    let line = text.get(..span.start).map_or(1, |before| before.matches('\n').count() + 1);
    format!(", line {line}")
}

/// The generic overrides found in `vars` (`TERRIERD__LIMITS__X` → `limits.x`).
pub fn from_env(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = vars
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(ENV_PREFIX)?;
            Some((key.to_ascii_lowercase().replace("__", "."), v))
        })
        .collect();
    found.sort();
    found
}

/// Parses `KEY=VALUE` (for `--set`).
pub fn parse_set(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(format!("{s:?}: bad key"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn set(doc: &mut toml::Table, key: &str, raw: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, sections) = parts.split_last().context("empty key")?;
    let mut table = doc;
    for section in sections {
        let entry = table.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().with_context(|| format!("{section} is not a section"))?;
    }
    table.insert(last.to_string(), value(raw));
    Ok(())
}

/// `raw` as a TOML value when it is one, else as a string.
fn value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_key_can_be_set_from_env_or_set() {
        let env = from_env(
            [
                ("TERRIERD__LIMITS__MAX_PENDING_STREAMS", "7"),
                ("TERRIERD__DRAIN_TIMEOUT", "3s"),
                ("TERRIERD__ADMIN__REQUEST_LOG", "5"),
                ("TERRIERD_LISTEN", "ignored: a flag's own variable"),
                ("OTHER", "x"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        assert_eq!(env.len(), 3);
        let mut all = env;
        all.push(parse_set("cluster.balance_tolerance=9").unwrap());
        all.push(parse_set("tcp_host=tcp.example.com").unwrap());
        let c = load(None, &all).unwrap();
        assert_eq!(c.limits.max_pending_streams, 7);
        assert_eq!(c.drain_timeout, Duration::from_secs(3));
        assert_eq!(c.admin.request_log, 5);
        assert_eq!(c.cluster.balance_tolerance, 9);
        assert_eq!(c.tcp_host.as_deref(), Some("tcp.example.com"));
    }

    #[test]
    fn overrides_win_over_the_file_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "grace_period = \"1m\"\n[limits]\nmax_pending_streams = 3\n").unwrap();
        let c = load(Some(&file), &[("limits.max_pending_streams".into(), "4".into())]).unwrap();
        assert_eq!(c.limits.max_pending_streams, 4);
        assert_eq!(c.grace_period, Duration::from_secs(60));
        let err = load(None, &[("limits.max_pending".into(), "4".into())]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "override limits.max_pending: unknown key `max_pending` (did you mean `max_pending_streams`?)"
        );
        std::fs::write(&file, "grace_period = \"1m\"\n\n[limits]\nmax_pending_stream = 3\n").unwrap();
        let err = format!("{:#}", load(Some(&file), &[]).unwrap_err());
        assert!(err.starts_with(&format!("config {}, line 4: ", file.display())), "{err}");
        assert!(err.ends_with("unknown key `max_pending_stream` (did you mean `max_pending_streams`?)"), "{err}");
        assert!(parse_set("novalue").is_err());
        assert!(parse_set("a..b=1").is_err());
    }
}
