//! Where token records live. Not in the lease store: an operator must be
//! able to add or revoke a token (`terrierd token ...`) while the server
//! runs, and the embedded lease file is held open by that server. So a
//! single node keeps its tokens in `tokens.json` beside it (rewritten
//! atomically, under a file lock, with a `tokens.version` counter), and a
//! cluster keeps them in Redis. Both
//! expose a cheap `version` that changes with every write, which each node
//! polls to pick up new and revoked tokens within a second.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

use super::token::TokenRecord;
use crate::store::StoreError;

/// The token operations the server and the CLI need.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// A value that changes whenever a token is added or revoked.
    async fn version(&self) -> Result<u64, StoreError>;
    /// Every token record.
    async fn load(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Adds a record (ids are random, so never a collision in practice;
    /// an existing id is an error).
    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError>;
    /// Removes a record; `false` when there was none with that id.
    async fn revoke(&self, id: &str) -> Result<bool, StoreError>;
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Tokens of a single node: `<data_dir>/tokens.json`.
pub struct FileTokenStore {
    path: PathBuf,
    /// A counter bumped after every write: reading 8 bytes is all a poll costs.
    version_path: PathBuf,
}

#[derive(Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenRecord>,
}

impl FileTokenStore {
    /// Tokens in `dir/tokens.json` (the file appears with the first token).
    pub fn new(dir: &Path) -> Self {
        Self { path: dir.join("tokens.json"), version_path: dir.join("tokens.version") }
    }

    fn read(&self) -> Result<TokenFile, StoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| backend(format!("{} is not a token file: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(e) => Err(backend(format!("reading {}: {e}", self.path.display()))),
        }
    }

    /// Read-modify-write under an exclusive lock on `tokens.json.lock`,
    /// replacing the file by rename so readers never see half of it.
    fn update<T>(&self, change: impl FnOnce(&mut TokenFile) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::private_file::create_dir(dir).map_err(backend)?;
        let lock = std::fs::File::create(self.path.with_extension("json.lock")).map_err(backend)?;
        lock.lock().map_err(backend)?;
        let mut file = self.read()?;
        let result = change(&mut file)?;
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&file).map_err(backend)?;
        crate::private_file::write(&tmp, &text).map_err(backend)?;
        std::fs::rename(&tmp, &self.path).map_err(backend)?;
        // Bumped after the rename: a reader that sees the new version reads
        // the new file (one that sees the old version re-reads next time).
        let version = self.read_version()? + 1;
        let tmp = self.version_path.with_extension("tmp");
        crate::private_file::write(&tmp, version.to_string().as_bytes()).map_err(backend)?;
        std::fs::rename(&tmp, &self.version_path).map_err(backend)?;
        Ok(result)
    }

    fn read_version(&self) -> Result<u64, StoreError> {
        match std::fs::read_to_string(&self.version_path) {
            Ok(text) => text.trim().parse().map_err(|_| backend(format!("{} is corrupt", self.version_path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(backend(format!("reading {}: {e}", self.version_path.display()))),
        }
    }
}

#[async_trait]
impl TokenStore for FileTokenStore {
    async fn version(&self) -> Result<u64, StoreError> {
        self.read_version()
    }

    async fn load(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self.read()?.tokens)
    }

    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError> {
        self.update(|file| {
            if file.tokens.iter().any(|t| t.id == record.id) {
                return Err(backend(format!("token id {} exists", record.id)));
            }
            file.tokens.push(record.clone());
            Ok(())
        })
    }

    async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        self.update(|file| {
            let before = file.tokens.len();
            file.tokens.retain(|t| t.id != id);
            Ok(file.tokens.len() != before)
        })
    }
}

/// Tokens shared by every node of a cluster: the hash `<prefix>tokens`
/// (id -> record JSON) and the counter `<prefix>tokens:version`.
pub struct RedisTokenStore {
    conn: ConnectionManager,
    hash: String,
    version: String,
}

impl RedisTokenStore {
    /// Connects to `url`; keys start with `prefix`.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(backend)?;
        let config =
            ConnectionManagerConfig::new().set_response_timeout(Some(timeout)).set_connection_timeout(Some(timeout));
        let conn = ConnectionManager::new_with_config(client, config).await.map_err(backend)?;
        Ok(Self { conn, hash: format!("{prefix}tokens"), version: format!("{prefix}tokens:version") })
    }
}

#[async_trait]
impl TokenStore for RedisTokenStore {
    async fn version(&self) -> Result<u64, StoreError> {
        let version: Option<u64> =
            redis::cmd("GET").arg(&self.version).query_async(&mut self.conn.clone()).await.map_err(backend)?;
        Ok(version.unwrap_or(0))
    }

    async fn load(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let values: Vec<String> =
            redis::cmd("HVALS").arg(&self.hash).query_async(&mut self.conn.clone()).await.map_err(backend)?;
        values.iter().map(|v| serde_json::from_str(v).map_err(backend)).collect()
    }

    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(backend)?;
        let (added, _): (u64, u64) = redis::pipe()
            .atomic()
            .cmd("HSETNX")
            .arg(&self.hash)
            .arg(&record.id)
            .arg(json)
            .cmd("INCR")
            .arg(&self.version)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        if added == 0 {
            return Err(backend(format!("token id {} exists", record.id)));
        }
        Ok(())
    }

    async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let (removed, _): (u64, u64) = redis::pipe()
            .atomic()
            .cmd("HDEL")
            .arg(&self.hash)
            .arg(id)
            .cmd("INCR")
            .arg(&self.version)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(removed > 0)
    }
}
