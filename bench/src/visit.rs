//! Visitors for the `storm` and `soak` parts: HTTP/1.1 over plain TCP to
//! terrierd's listener with `Host: <subdomain>.localhost`, so each request
//! is relayed through a simulated device ([`crate::sim`]). Also the admin
//! API's server info (`tasks_alive`, `devices_online`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::sim;

/// Longest one request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A keep-alive connection to one device's subdomain.
pub struct Visitor {
    stream: TcpStream,
    host: String,
    /// Bytes read past the last answer.
    pending: Vec<u8>,
}

impl Visitor {
    /// Connects to `server` for `<subdomain>.localhost`.
    pub async fn connect(server: SocketAddr, subdomain: &str) -> anyhow::Result<Self> {
        let stream = timeout(REQUEST_TIMEOUT, TcpStream::connect(server)).await.context("connect timed out")??;
        stream.set_nodelay(true)?;
        Ok(Self { stream, host: format!("{subdomain}.localhost"), pending: Vec::new() })
    }

    /// `GET path`; returns the status once the whole answer is read.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<u16> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        timeout(REQUEST_TIMEOUT, self.exchange(request.as_bytes())).await.context("request timed out")?
    }

    /// `POST path` with `body`; returns the status once the whole answer is read.
    pub async fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<u16> {
        let mut request =
            format!("POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n", self.host, body.len())
                .into_bytes();
        request.extend_from_slice(body);
        timeout(REQUEST_TIMEOUT, self.exchange(&request)).await.context("request timed out")?
    }

    /// `GET /big`, reads its head and `bytes` of its body, then drops the
    /// connection mid-body. Returns the status.
    pub async fn abort_download(mut self, bytes: usize) -> anyhow::Result<u16> {
        let request = format!("GET /big HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        timeout(REQUEST_TIMEOUT, async {
            self.stream.write_all(request.as_bytes()).await?;
            let (status, end) = self.read_head().await?;
            while self.pending.len() < end + bytes && status == 200 {
                self.read_some().await?;
            }
            Ok(status)
        })
        .await
        .context("request timed out")?
    }

    /// `POST /upload` announcing `announced` body bytes, sends `sent` of
    /// them, then drops the connection mid-body.
    pub async fn abort_upload(mut self, announced: usize, sent: usize) -> anyhow::Result<()> {
        let head =
            format!("POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: {announced}\r\n\r\n", self.host).into_bytes();
        timeout(REQUEST_TIMEOUT, async {
            self.stream.write_all(&head).await?;
            self.stream.write_all(&vec![b'u'; sent]).await?;
            // Let the server relay what it got before the connection goes.
            tokio::time::sleep(Duration::from_millis(20)).await;
            anyhow::Ok(())
        })
        .await
        .context("request timed out")?
    }

    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<u16> {
        self.stream.write_all(request).await?;
        let (status, end) = self.read_head().await?;
        let head = std::str::from_utf8(&self.pending[..end]).unwrap_or_default();
        let length = sim::content_length(head).context("answer without Content-Length")?;
        while self.pending.len() < end + length {
            self.read_some().await?;
        }
        self.pending.drain(..end + length);
        Ok(status)
    }

    /// Reads until a whole answer head is buffered; returns its status and
    /// where its body starts.
    async fn read_head(&mut self) -> anyhow::Result<(u16, usize)> {
        loop {
            if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.pending[..end]).context("answer head is not UTF-8")?;
                let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status")?;
                return Ok((status, end + 4));
            }
            self.read_some().await?;
        }
    }

    async fn read_some(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 16 << 10];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed after {} bytes of an answer", self.pending.len());
        }
        self.pending.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// The admin API's `GET /api/v1/server` as JSON.
pub async fn server_info(server: SocketAddr, admin_token: &str) -> anyhow::Result<serde_json::Value> {
    timeout(REQUEST_TIMEOUT, async {
        let mut stream = TcpStream::connect(server).await?;
        let request = format!(
            "GET /api/v1/server HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {admin_token}\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n").context("no answer head")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("server info: {}", head.lines().next().unwrap_or_default());
        }
        Ok(serde_json::from_str(body)?)
    })
    .await
    .context("server info timed out")?
}
