//! `SIGHUP`: reloads what can change without dropping a single tunnel — the
//! admin token file, the error page templates (`pages_dir`) and the TLS
//! certificate files (renewed in place by certbot and the like). Everything
//! else in the configuration (listen address, limits, store) is read once at
//! start; change it with a restart, which devices ride out within their
//! grace period.

use std::sync::Arc;

use crate::Node;

/// Reloads on every `SIGHUP` until shutdown.
pub async fn on_sighup(node: Arc<Node>) {
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
                () = node.shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            reload(&node);
        }
    }
    #[cfg(not(unix))]
    node.shutdown.cancelled().await;
}

/// Re-reads the admin token, the page templates and the TLS certificate
/// files; a part that fails to load keeps its old value and is logged.
pub fn reload(node: &Node) {
    match node.admin.token.reload() {
        Ok(true) => tracing::info!("reload: admin token changed"),
        Ok(false) => tracing::info!("reload: admin token unchanged"),
        Err(e) => tracing::error!(error = %e, "reload: admin token kept"),
    }
    match node.pages.reload() {
        Ok(()) => tracing::info!("reload: page templates reloaded"),
        Err(e) => tracing::error!(error = %e, "reload: page templates kept"),
    }
    match node.certificates.reload(&node.config) {
        Ok(count) => tracing::info!(count, "reload: TLS certificate files re-read"),
        Err(e) => tracing::error!(error = format!("{e:#}"), "reload: TLS certificates kept"),
    }
}
