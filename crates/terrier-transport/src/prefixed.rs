//! A connection with bytes already read from it put back in front.
//!
//! Why: a client handshake reads the `101` response in chunks, and the
//! server's first frames (a pooled socket's `assign`, a visitor's first
//! bytes) may come in the same segment. Those bytes belong to the WebSocket
//! and must be read first (docs/PROTOCOL.md §2).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, read after `prefix`.
#[derive(Debug)]
pub struct Prefixed<S> {
    /// Bytes read from `inner` before, not consumed yet.
    prefix: Bytes,
    /// The connection.
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner` with `prefix` to be read first.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        if this.prefix.is_empty() {
            // Let go of the buffer they were read into (terrierd reads a
            // request head into 16 KiB): a control socket keeps its
            // connection for days.
            this.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    crate::delegate_async_write!(inner);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_prefix_is_read_first_then_the_connection() {
        let (a, mut b) = tokio::io::duplex(1024);
        b.write_all(b" world").await.unwrap();
        drop(b);
        let mut stream = Prefixed::new(Bytes::from_static(b"hello"), a);
        let mut got = String::new();
        stream.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello world");
    }
}
