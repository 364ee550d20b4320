//! The admin token: what `Authorization: Bearer` must carry for the admin
//! API, the dashboard's data and `/metrics`.
//!
//! Secure by default: with no token configured, the first start writes a
//! random one to `<data_dir>/admin.token` (mode 0600, owner only) and logs
//! the file's path — never the token. `SIGHUP` re-reads it, so a rotated
//! token takes effect without a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use rand::Rng;

use crate::config::{Secret, ServerConfig};

/// Shortest token accepted from a file or the environment.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The current admin token, replaceable at run time.
pub struct AdminToken {
    /// The token; a lock so `SIGHUP` can swap it.
    current: RwLock<Secret>,
    /// Where it came from, for reloads and messages (`None`: environment).
    file: Option<PathBuf>,
}

impl AdminToken {
    /// The token from `TERRIERD_ADMIN_TOKEN` (already in `config.admin.token`),
    /// else from the token file, which is created with a fresh random token
    /// when it does not exist.
    pub fn load(config: &ServerConfig) -> anyhow::Result<Self> {
        if let Some(token) = &config.admin.token {
            check(&token.0, "TERRIERD_ADMIN_TOKEN")?;
            return Ok(Self { current: RwLock::new(token.clone()), file: None });
        }
        let file = config.admin_token_file();
        let token = read_or_create(&file)?;
        Ok(Self { current: RwLock::new(token), file: Some(file) })
    }

    /// Does `presented` match the token? Constant time in the token's length.
    pub fn verify(&self, presented: &str) -> bool {
        let current = self.current.read().expect("token lock");
        bool::from(subtle::ConstantTimeEq::ct_eq(current.0.as_bytes(), presented.as_bytes()))
    }

    /// The token, for `--demo` to print (a first-time user needs it).
    pub fn reveal(&self) -> String {
        self.current.read().expect("token lock").0.clone()
    }

    /// The file the token is read from (`None` when it came from the environment).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Re-reads the token file (`SIGHUP`); returns whether the token changed.
    /// A missing or bad file keeps the current token.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let Some(file) = &self.file else { return Ok(false) };
        let fresh = read(file)?;
        let mut current = self.current.write().expect("token lock");
        let changed = *current != fresh;
        *current = fresh;
        Ok(changed)
    }
}

fn check(token: &str, source: &str) -> anyhow::Result<()> {
    if token.chars().count() < MIN_TOKEN_CHARS || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!("admin token from {source} must be at least {MIN_TOKEN_CHARS} characters without spaces");
    }
    Ok(())
}

fn read(file: &Path) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("reading admin token file {}: {e}", file.display()))?;
    let token = text.trim().to_owned();
    check(&token, &file.display().to_string())?;
    warn_if_readable_by_others(file);
    Ok(Secret(token))
}

fn read_or_create(file: &Path) -> anyhow::Result<Secret> {
    if file.exists() {
        return read(file);
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_file::create_dir(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    }
    let bytes: [u8; 32] = rand::rng().random();
    let token = crate::hex::encode(&bytes);
    let mut f = crate::private_file::open(file, true)
        .map_err(|e| anyhow::anyhow!("creating admin token file {}: {e}", file.display()))?;
    f.write_all(format!("{token}\n").as_bytes())?;
    tracing::info!(file = %file.display(), "generated an admin token (Authorization: Bearer <contents of this file>)");
    Ok(Secret(token))
}

#[cfg(unix)]
fn warn_if_readable_by_others(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %file.display(), "admin token file is readable by other users; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_file: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_generates_a_private_token_and_reload_picks_up_changes() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig { data_dir: dir.path().join("data"), ..Default::default() };
        let token = AdminToken::load(&config).unwrap();
        let file = dir.path().join("data/admin.token");
        let written = std::fs::read_to_string(&file).unwrap();
        assert_eq!(written.trim().len(), 64);
        assert!(token.verify(written.trim()));
        assert!(!token.verify("nope"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // A second start reads the same token.
        assert!(AdminToken::load(&config).unwrap().verify(written.trim()));
        std::fs::write(&file, "a-rotated-token-of-enough-length\n").unwrap();
        assert!(token.reload().unwrap());
        assert!(token.verify("a-rotated-token-of-enough-length"));
        std::fs::write(&file, "short\n").unwrap();
        assert!(token.reload().is_err());
        assert!(token.verify("a-rotated-token-of-enough-length"), "a bad file keeps the old token");
    }

    #[test]
    fn environment_token_wins_and_must_be_long_enough() {
        let mut config = ServerConfig::default();
        config.admin.token = Some(Secret("from-the-environment-123".into()));
        let token = AdminToken::load(&config).unwrap();
        assert!(token.verify("from-the-environment-123"));
        assert!(token.file().is_none());
        config.admin.token = Some(Secret("short".into()));
        assert!(AdminToken::load(&config).is_err());
    }
}
