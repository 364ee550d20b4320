//! Sequential new connections, each carrying one HTTP request: connect, send
//! `GET /`, read the whole answer, close. This is what a visitor without
//! keep-alive costs, including the tunnel's per-connection set-up.

use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::lab::Endpoint;

/// Longest one connection + request may take before the run fails.
const PER_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens `count` connections one after the other; returns the mean time of
/// one, in milliseconds.
pub async fn mean_ms(to: &Endpoint, count: usize) -> anyhow::Result<f64> {
    let host = to.host.clone().unwrap_or_else(|| to.addr.to_string());
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let started = Instant::now();
    for i in 0..count {
        timeout(PER_CONNECTION_TIMEOUT, one_request(to, request.as_bytes()))
            .await
            .with_context(|| format!("connection {i} to {} ({host}) took over {PER_CONNECTION_TIMEOUT:?}", to.addr))?
            .with_context(|| format!("connection {i} to {} ({host})", to.addr))?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / count.max(1) as f64)
}

async fn one_request(to: &Endpoint, request: &[u8]) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(to.addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed after {} bytes, before the whole answer", buf.len());
        }
        buf.extend_from_slice(&chunk[..n]);
        if response_complete(&buf)? {
            return Ok(());
        }
    }
}

/// Whether `buf` holds a whole `200` answer with a `Content-Length` body;
/// an error for any other status.
fn response_complete(buf: &[u8]) -> anyhow::Result<bool> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(false);
    };
    let head = std::str::from_utf8(&buf[..end]).context("answer head is not UTF-8")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("answer {status:?}, not 200");
    }
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .context("answer has no Content-Length")?;
    Ok(buf.len() >= end + 4 + length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_whole_body() {
        let head = b"HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 5\r\n\r\n";
        assert!(!response_complete(&head[..20]).unwrap());
        let mut answer = head.to_vec();
        answer.extend_from_slice(b"abc");
        assert!(!response_complete(&answer).unwrap());
        answer.extend_from_slice(b"de");
        assert!(response_complete(&answer).unwrap());
    }

    #[test]
    fn other_statuses_are_errors() {
        assert!(response_complete(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").is_err());
    }
}
