//! The HTTP/2-vs-HTTP/1 sniffer on a fresh connection: `sniff` reading
//! arbitrary bytes that arrive in arbitrary chunks, then `Prefixed` serving
//! what was read in front of the rest.
//!
//! Checks: no panic, no hang; `Http2` only for exactly the whole preface;
//! `Http1` once the bytes stop being a preface prefix, having read no
//! more than a preface's length; an error only when the stream ended inside the
//! preface; and the connection as seen after sniffing is byte for byte the
//! connection as sent.
#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use terrier_server::ingress::sniff::{sniff, Prefixed, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream delivering `chunks` one per read (split when the reader's buffer
/// is smaller), then end of stream.
struct Chunks(std::collections::VecDeque<Vec<u8>>);

impl AsyncRead for Chunks {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        while let Some(chunk) = self.0.front_mut() {
            if chunk.is_empty() {
                self.0.pop_front();
                continue;
            }
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.drain(..n);
            break;
        }
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime"))
}

// Input: one byte seeding the chunk sizes (1 to 24 bytes each: the network
// delivers the request in pieces), then what the client sends.
fuzz_target!(|data: &[u8]| {
    let [pattern, sent @ ..] = data else { return };
    let sent = sent.to_vec();
    let mut chunks = Vec::new();
    let (mut at, mut size) = (0, usize::from(*pattern));
    while at < sent.len() {
        let n = (size % 24 + 1).min(sent.len() - at);
        chunks.push(sent[at..at + n].to_vec());
        at += n;
        size = size.wrapping_mul(31).wrapping_add(7);
    }
    runtime().block_on(async move {
        let mut stream = Chunks(chunks.into());
        match sniff(&mut stream, Duration::from_secs(60)).await {
            Ok((Protocol::Http2, seen)) => {
                assert_eq!(seen, H2_PREFACE);
                assert!(sent.starts_with(H2_PREFACE));
                replay(seen, stream, &sent).await;
            }
            Ok((Protocol::Http1, seen)) => {
                assert!(sent.starts_with(&seen));
                assert!(!H2_PREFACE.starts_with(&seen), "decided HTTP/1 on a preface prefix {seen:?}");
                assert!(seen.len() <= H2_PREFACE.len(), "read {} bytes to decide", seen.len());
                replay(seen, stream, &sent).await;
            }
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
                assert!(H2_PREFACE.starts_with(&sent) && sent.len() < H2_PREFACE.len());
            }
        }
    });
});

/// Reads the sniffed connection to its end: it must be what was sent.
async fn replay(seen: Vec<u8>, stream: Chunks, sent: &[u8]) {
    let mut all = Vec::new();
    Prefixed::new(seen, stream).read_to_end(&mut all).await.expect("in-memory read");
    assert_eq!(all, sent);
}
