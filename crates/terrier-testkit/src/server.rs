//! [`TestServer`]: `terrier_server::run` on 127.0.0.1:0 with its own data
//! dir, stopped gracefully by [`TestServer::stop`] (or cancelled on drop).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use terrier_server::ServerConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running in-process terrierd.
pub struct TestServer {
    /// Address of the HTTP listener.
    pub addr: SocketAddr,
    /// The configuration it runs with.
    pub config: ServerConfig,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// Keeps a temporary data dir alive (None when the caller gave one).
    _data: Option<tempfile::TempDir>,
}

/// A configuration for tests: fast heartbeats and timeouts, loopback only.
pub fn test_config(data_dir: &Path) -> ServerConfig {
    let mut config = ServerConfig { data_dir: data_dir.to_owned(), ..ServerConfig::default() };
    config.limits.heartbeat_interval = Duration::from_secs(1);
    config.limits.stream_open_timeout = Duration::from_secs(5);
    config.drain_timeout = Duration::from_secs(2);
    // Every test device connects from 127.0.0.1; the per-IP limit has its own test.
    config.limits.control_handshakes_per_ip_per_minute = 0;
    config
}

impl TestServer {
    /// Starts a server with [`test_config`] changed by `tweak`, in a fresh data dir.
    pub async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self::start_in(dir.path(), tweak).await;
        server._data = Some(dir);
        server
    }

    /// Starts a server on `data_dir` (to restart one on the same store).
    pub async fn start_in(data_dir: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), data_dir, tweak).await
    }

    /// Starts a server on a given address (to restart one on the same port).
    pub async fn start_on(addr: SocketAddr, data_dir: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind test server");
        let addr = listener.local_addr().expect("local addr");
        let mut config = test_config(data_dir);
        config.listen = addr;
        tweak(&mut config);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(terrier_server::run(config.clone(), listener, shutdown.clone()));
        if let Some(tls) = config.tls.listen {
            // The TLS listener is bound inside `run`: wait for it.
            crate::eventually(Duration::from_secs(10), "the TLS listener accepts", || async move {
                tokio::net::TcpStream::connect(tls).await.ok()
            })
            .await;
        }
        Self { addr, config, shutdown, handle: Some(handle), _data: None }
    }

    /// The server URL agents use.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr)).expect("server url")
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// Stops the server gracefully and waits until `run` returned.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), handle).await.expect("server stops within 10 s");
            result.expect("server task").expect("server run result");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
