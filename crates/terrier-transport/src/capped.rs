//! A connection whose reads return at most a fixed number of bytes.
//!
//! Why: fastwebsockets reads a data socket with `read_buf` into a `BytesMut`
//! that keeps the bytes of frames not consumed yet. When a read brings more
//! unconsumed bytes than the buffer has already consumed, `BytesMut` doubles
//! its allocation, and the next read fills the larger spare capacity: in a
//! bulk transfer the buffer grew until it held the whole kernel receive
//! queue, ~10 MiB per socket (valgrind massif, one iperf3 run), and glibc
//! kept that memory per thread afterwards. Capping each read at a few frames
//! keeps the buffer at a few frames too.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Most bytes one read of a data socket returns: two full data frames.
pub const MAX_READ_BYTES: usize = 2 * terrier_proto::limits::DATA_CHUNK_BYTES;

/// `inner`, read at most `max` bytes at a time; writes pass straight through.
#[derive(Debug)]
pub struct CappedReads<S> {
    /// The connection.
    inner: S,
    /// Most bytes one read returns.
    max: u64,
}

impl<S> CappedReads<S> {
    /// `inner` with reads of at most `max` bytes (at least one).
    pub fn new(inner: S, max: usize) -> Self {
        Self { inner, max: max.max(1) as u64 }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CappedReads<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // `Take` with a fresh limit per read: tokio's own way to hand the
        // inner reader a shorter window of `buf`, uninitialised memory and all.
        Pin::new(&mut (&mut this.inner).take(this.max)).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CappedReads<S> {
    crate::delegate_async_write!(inner);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_read_returns_at_most_max_bytes_and_nothing_is_lost() {
        let (mut far, near) = tokio::io::duplex(1 << 20);
        let sent: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        far.write_all(&sent).await.unwrap();
        drop(far);
        let mut capped = CappedReads::new(near, 1000);
        let mut got = bytes::BytesMut::with_capacity(1 << 20);
        let mut largest = 0;
        loop {
            let n = capped.read_buf(&mut got).await.unwrap();
            if n == 0 {
                break;
            }
            largest = largest.max(n);
        }
        assert_eq!(largest, 1000, "reads are capped, and reach the cap");
        assert_eq!(&got[..], &sent[..]);
    }

    #[tokio::test]
    async fn writes_pass_through_vectored() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut near, _) = listener.accept().await.unwrap();
        let mut capped = CappedReads::new(far, 1);
        assert!(capped.is_write_vectored(), "writev stays available to the WebSocket");
        let bufs = [io::IoSlice::new(b"head"), io::IoSlice::new(b"-body")];
        let n = capped.write_vectored(&bufs).await.unwrap();
        capped.write_all(&b"head-body"[n..]).await.unwrap();
        drop(capped);
        let mut got = Vec::new();
        near.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"head-body");
    }
}
