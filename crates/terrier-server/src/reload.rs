//! `SIGHUP`: reloads what can change without dropping a single tunnel.
//!
//! Files named in the configuration are re-read: the admin token file, the
//! error page templates (`pages_dir`) and the TLS certificate files (renewed
//! in place by certbot and the like). When the node was started with a
//! [`Source`] (as `terrierd` is), the configuration itself is built again
//! exactly as at start — the same file, then the same `TERRIERD__*`, `--set`
//! and flag overrides, so they keep winning — and validated; then its live
//! keys ([`is_live`]: `[limits]`, `[access."<name>"]`, `grace_period`) are put
//! in force through [`crate::live`] and [`crate::access::AccessRules`]. Any
//! other key that changed is logged as needing a restart. A configuration that
//! does not load or validate changes nothing: the last good values stay.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::access::AccessRules;
use crate::admin::token::AdminToken;
use crate::auth::Auth;
use crate::live::Live;
use crate::pages::LivePages;
use crate::tls::sni::OperatorCerts;
use crate::ServerConfig;

/// Builds the node's configuration again, the same way as at start.
pub type Source = Arc<dyn Fn() -> anyhow::Result<ServerConfig> + Send + Sync>;

/// `[limits]` keys read once at start (into the store connection), so a
/// change to them waits for a restart.
const LIMITS_READ_AT_START: &[&str] = &["limits.store_timeout"];

/// Does a change to this dotted configuration key take effect on `SIGHUP`?
pub fn is_live(key: &str) -> bool {
    let limit = key.starts_with("limits.") && !LIMITS_READ_AT_START.contains(&key);
    limit || key == "grace_period" || key.starts_with("access.")
}

/// What a reload puts new values into.
pub struct Reloadable {
    /// Limits and grace period.
    pub live: Arc<Live>,
    /// Visitor access rules.
    pub access: Arc<AccessRules>,
    /// The per-IP handshake limit.
    pub auth: Arc<Auth>,
    /// The admin token file.
    pub admin_token: Arc<AdminToken>,
    /// Page templates.
    pub pages: Arc<LivePages>,
    /// The operator's TLS certificate files.
    pub certificates: Arc<OperatorCerts>,
}

/// How this node's configuration is reloaded.
pub struct Reloader {
    /// Where the configuration comes from; `None` when the caller handed a
    /// finished [`ServerConfig`] to [`crate::run`] (then only files reload).
    source: Option<Source>,
    /// The configuration as read at start.
    started: Arc<ServerConfig>,
    /// The configuration whose live keys are in force now.
    applied: Mutex<ServerConfig>,
    /// Where the new values go.
    parts: Reloadable,
}

impl Reloader {
    /// Reloads from `source` (if any) into `parts` a node started with `config`.
    pub fn new(source: Option<Source>, config: Arc<ServerConfig>, parts: Reloadable) -> Self {
        Self { source, applied: Mutex::new((*config).clone()), started: config, parts }
    }
}

/// Reloads on every `SIGHUP` until `shutdown`.
pub async fn on_sighup(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(hup) => hup,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload needs a restart");
                return;
            }
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            reload(&reloader);
        }
    }
    #[cfg(not(unix))]
    shutdown.cancelled().await;
}

/// Re-reads the configuration, the admin token, the page templates and the
/// TLS certificate files; a part that fails to load keeps its old value and
/// is logged.
pub fn reload(reloader: &Reloader) {
    reload_config(reloader);
    let parts = &reloader.parts;
    match parts.admin_token.reload() {
        Ok(true) => tracing::info!("reload: admin token changed"),
        Ok(false) => tracing::info!("reload: admin token unchanged"),
        Err(e) => tracing::error!(error = %e, "reload: admin token kept"),
    }
    match parts.pages.reload() {
        Ok(()) => tracing::info!("reload: page templates reloaded"),
        Err(e) => tracing::error!(error = %e, "reload: page templates kept"),
    }
    match parts.certificates.reload(&reloader.started) {
        Ok(count) => tracing::info!(count, "reload: TLS certificate files re-read"),
        Err(e) => tracing::error!(error = format!("{e:#}"), "reload: TLS certificates kept"),
    }
}

/// Builds the configuration again and puts its live keys in force.
fn reload_config(reloader: &Reloader) {
    let Some(source) = &reloader.source else { return };
    let loaded = source().and_then(|new| {
        new.validate()?;
        let access = crate::access::AccessRules::compile(&new.access).map_err(anyhow::Error::msg)?;
        Ok((new, access))
    });
    let (new, access) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "reload: configuration kept (the last good values stay)");
            return;
        }
    };
    // Keys read once at start compare with the start; live ones with the last reload.
    for key in changed_keys(&reloader.started, &new).into_iter().filter(|k| !is_live(k)) {
        tracing::warn!(%key, "reload: {key} changed but is read only at start; restart terrierd to apply it");
    }
    let mut applied = reloader.applied.lock().expect("reload lock");
    let live: Vec<String> = changed_keys(&applied, &new).into_iter().filter(|k| is_live(k)).collect();
    let parts = &reloader.parts;
    parts.live.apply(&new);
    parts.access.replace(access);
    parts.auth.handshakes.set_per_minute(new.limits.control_handshakes_per_ip_per_minute);
    tracing::info!(changed = ?live, "reload: configuration applied");
    *applied = new;
}

/// The dotted keys (`limits.max_header_bytes`, `access.cam.allow_ips`)
/// whose values differ between `a` and `b`, sorted.
pub fn changed_keys(a: &ServerConfig, b: &ServerConfig) -> Vec<String> {
    let (a, b) = (flatten(a), flatten(b));
    let mut keys: Vec<String> = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

/// `config` as dotted key → value (tables opened, arrays kept whole).
fn flatten(config: &ServerConfig) -> BTreeMap<String, serde_json::Value> {
    fn walk(prefix: String, value: serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
        match value {
            // An empty table (`access` with no device) adds no key.
            serde_json::Value::Object(table) => {
                for (key, value) in table {
                    let key = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
                    walk(key, value, out);
                }
            }
            leaf => {
                out.insert(prefix, leaf);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(String::new(), serde_json::to_value(config).unwrap_or_default(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn changes_are_found_per_key_and_sorted_into_live_and_restart() {
        let a = ServerConfig::default();
        let mut b = a.clone();
        assert!(changed_keys(&a, &b).is_empty());
        b.limits.max_header_bytes = 9000;
        b.limits.store_timeout = Duration::from_secs(1);
        b.grace_period = Duration::from_secs(1);
        b.redis_prefix = "other:".into();
        b.access.insert(
            "cam".into(),
            crate::access::AccessConfig { allow_ips: vec!["10.0.0.0/8".into()], ..Default::default() },
        );
        let changed = changed_keys(&a, &b);
        assert_eq!(
            changed,
            [
                "access.cam.allow_ips",
                "access.cam.basic_auth",
                "access.cam.bearer_tokens",
                "access.cam.paths",
                "grace_period",
                "limits.max_header_bytes",
                "limits.store_timeout",
                "redis_prefix"
            ]
        );
        let restart: Vec<&String> = changed.iter().filter(|k| !is_live(k)).collect();
        assert_eq!(restart, ["limits.store_timeout", "redis_prefix"]);
    }
}
