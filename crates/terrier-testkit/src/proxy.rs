//! [`PausingProxy`]: a TCP relay between an agent and a server that can
//! stop moving bytes without closing anything — a network black hole, as a
//! NAT dropping a mapping or a dead link produces. It also counts the
//! connections it relayed, so a test can see how many sockets an agent opened.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running relay to one target.
pub struct PausingProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    paused: Arc<watch::Sender<bool>>,
    accepted: Arc<AtomicUsize>,
}

impl PausingProxy {
    /// Relays every connection to `target` until the runtime ends.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let paused = Arc::new(watch::channel(false).0);
        let accepted = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (paused.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, flag.subscribe()), pump(sr, cw, flag.subscribe()));
                });
            }
        });
        Self { addr, paused, accepted }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stops moving bytes (connections stay open, data just stops).
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Moves bytes again.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // While paused, read nothing and write nothing: a black hole.
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        let n = tokio::select! {
            n = from.read(&mut buf) => match n { Ok(0) | Err(_) => break, Ok(n) => n },
            _ = paused.changed() => continue,
        };
        // Bytes read just before a pause are dropped, as a dead link would.
        if *paused.borrow() {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
