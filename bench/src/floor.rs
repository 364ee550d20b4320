//! The relay floor: the least any tunnel whose device dials out can do.
//! Two plain TCP relays in two processes (`terrier-bench relay`), one where
//! the server runs and one where the device's agent runs, each copying
//! bytes between an accepted connection and a new one to the next hop: no
//! handshake, no framing, no routing, no pool. Every tunnel of this shape
//! (terrier, rathole, bore) pays these two extra loopback hops, so the
//! floor's ratio to direct, measured in the same run, is the most any of
//! them can reach on this machine.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// What a relay process prints once it listens: its ports, in the order
/// of its `--to` targets.
pub const READY: &str = "relaying on";

/// Runs one relay process: a listener on an ephemeral 127.0.0.1 port per
/// target, each connection copied to a new connection to its target, until
/// the process is killed.
pub async fn serve(targets: &[SocketAddr]) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for &to in targets {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding a relay port")?;
        listeners.push((listener, to));
    }
    let ports: Vec<String> =
        listeners.iter().map(|(l, _)| l.local_addr().map(|a| a.port().to_string())).collect::<Result<_, _>>()?;
    println!("{READY} {}", ports.join(" "));
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, to) in listeners {
        tasks.spawn(accept_loop(listener, to));
    }
    while let Some(ended) = tasks.join_next().await {
        ended??;
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, to: SocketAddr) -> anyhow::Result<()> {
    loop {
        let (visitor, _) = listener.accept().await.context("accepting")?;
        tokio::spawn(async move {
            if let Err(e) = relay_one(visitor, to).await {
                eprintln!("relay to {to}: {e}");
            }
        });
    }
}

async fn relay_one(mut visitor: TcpStream, to: SocketAddr) -> std::io::Result<()> {
    let mut next = TcpStream::connect(to).await?;
    visitor.set_nodelay(true)?;
    next.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut visitor, &mut next).await?;
    let _ = next.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Bytes go through a relay both ways, and a half-close reaches the far end.
    #[tokio::test]
    async fn relays_both_ways_and_passes_the_end() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = target.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            let (mut conn, _) = target.accept().await.unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            conn.write_all(&got).await.unwrap();
        });
        let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = relay.local_addr().unwrap();
        let relaying = tokio::spawn(accept_loop(relay, to));

        let mut visitor = TcpStream::connect(at).await.unwrap();
        visitor.write_all(b"through the floor").await.unwrap();
        visitor.shutdown().await.unwrap();
        let mut back = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), visitor.read_to_end(&mut back));
        read.await.expect("the relay passed the end on").unwrap();
        assert_eq!(back, b"through the floor");
        echo.await.unwrap();
        relaying.abort();
    }
}
