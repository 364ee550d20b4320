//! The relay floor: the least any tunnel whose device dials out can do.
//! Two plain TCP relays in two processes (`terrier-bench relay`), one where
//! the server runs and one where the device's agent runs, each copying
//! bytes between an accepted connection and a new one to the next hop: no
//! handshake, no framing, no routing, no pool. Every tunnel of this shape
//! (terrier, rathole, bore) pays these two extra loopback hops, so the
//! floor's ratio to direct, measured in the same run, is the most any of
//! them can reach on this machine.
//!
//! The pooled floor ([`serve_pool_server`], [`serve_pool_client`]) is the
//! same two hops in the shape of terrier's `--pool`: the agent's hop keeps
//! connections open to the server's hop, the server's hop hands each
//! visitor to an idle one, and the agent's hop dials the service when the
//! visitor's first bytes arrive, then opens a replacement. It is the least
//! a pooled tunnel's new connection can cost here.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

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
    announce(listeners.iter().map(|(l, _)| l))?;
    let mut tasks = JoinSet::new();
    for (listener, to) in listeners {
        tasks.spawn(accept_loop(listener, to));
    }
    until_one_fails(tasks).await
}

/// Prints [`READY`] and the ports of `listeners`, in their order.
fn announce<'a>(listeners: impl Iterator<Item = &'a TcpListener>) -> anyhow::Result<()> {
    let ports: Vec<String> =
        listeners.map(|l| l.local_addr().map(|a| a.port().to_string())).collect::<Result<_, _>>()?;
    println!("{READY} {}", ports.join(" "));
    Ok(())
}

/// Waits for the relay's tasks, which run until one fails.
async fn until_one_fails(mut tasks: JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
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

async fn relay_one(visitor: TcpStream, to: SocketAddr) -> std::io::Result<()> {
    let next = TcpStream::connect(to).await?;
    copy_both(visitor, next).await
}

async fn copy_both(mut visitor: TcpStream, mut next: TcpStream) -> std::io::Result<()> {
    visitor.set_nodelay(true)?;
    next.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut visitor, &mut next).await?;
    let _ = next.shutdown().await;
    Ok(())
}

/// Runs the server hop of the pooled floor for `services` services: per
/// service a public port and a pool port on 127.0.0.1, printed as
/// [`READY`] followed by the public ports, then the pool ports. Each
/// visitor is copied to the next idle pooled connection.
pub async fn serve_pool_server(services: usize) -> anyhow::Result<()> {
    let mut pairs = Vec::new();
    for _ in 0..services {
        let public = TcpListener::bind("127.0.0.1:0").await.context("binding a public port")?;
        let pool = TcpListener::bind("127.0.0.1:0").await.context("binding a pool port")?;
        pairs.push((public, pool));
    }
    announce(pairs.iter().map(|(public, _)| public).chain(pairs.iter().map(|(_, pool)| pool)))?;
    let mut tasks = JoinSet::new();
    for (public, pool) in pairs {
        tasks.spawn(hand_out_pooled(public, pool));
    }
    until_one_fails(tasks).await
}

/// Accepts pooled connections on `pool` and gives each visitor of `public`
/// the oldest idle one (waiting for one if none is idle).
async fn hand_out_pooled(public: TcpListener, pool: TcpListener) -> anyhow::Result<()> {
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel();
    let pooling = tokio::spawn(async move {
        loop {
            let (pooled, _) = pool.accept().await.context("accepting a pooled connection")?;
            if idle_tx.send(pooled).is_err() {
                return anyhow::Ok(());
            }
        }
    });
    let handing = async {
        loop {
            let (visitor, _) = public.accept().await.context("accepting")?;
            let Some(pooled) = idle_rx.recv().await else { return Ok(()) };
            tokio::spawn(async move {
                if let Err(e) = copy_both(visitor, pooled).await {
                    eprintln!("pooled relay: {e}");
                }
            });
        }
    };
    tokio::select! {
        ended = pooling => ended?,
        ended = handing => ended,
    }
}

/// Runs the agent hop of the pooled floor: for each `(pool, to)` pair,
/// `size` connections kept open to the server hop's pool port; one that
/// receives bytes dials `to`, relays, and is replaced at once. Prints
/// [`READY`] once the slots run (the bench then waits for a request to
/// come through).
pub async fn serve_pool_client(pairs: &[(SocketAddr, SocketAddr)], size: usize) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    for &(pool, to) in pairs {
        for _ in 0..size.max(1) {
            tasks.spawn(keep_pooled(pool, to));
        }
    }
    println!("{READY}");
    until_one_fails(tasks).await
}

/// One pool slot: open a connection to `pool`, wait for a visitor's bytes,
/// relay them to a new connection to `to` in the background, repeat. It
/// fails when the pool port refuses.
async fn keep_pooled(pool: SocketAddr, to: SocketAddr) -> anyhow::Result<()> {
    loop {
        let pooled = TcpStream::connect(pool).await.with_context(|| format!("connecting to the pool port {pool}"))?;
        pooled.readable().await?;
        tokio::spawn(async move {
            if let Err(e) = relay_one(pooled, to).await {
                eprintln!("pooled relay to {to}: {e}");
            }
        });
    }
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

    /// The pooled floor hands each visitor to a pooled connection, and the
    /// slot it used is replaced: visitors one after another all get through.
    #[tokio::test]
    async fn pooled_relays_one_visitor_after_another() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = target.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            loop {
                let (mut conn, _) = target.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    conn.read_to_end(&mut got).await.unwrap();
                    conn.write_all(&got).await.unwrap();
                });
            }
        });
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = public.local_addr().unwrap();
        let pool = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool_at = pool.local_addr().unwrap();
        let server = tokio::spawn(hand_out_pooled(public, pool));
        let client = tokio::spawn(keep_pooled(pool_at, to));

        for i in 0..5 {
            let mut visitor = TcpStream::connect(at).await.unwrap();
            let sent = format!("visitor {i}");
            visitor.write_all(sent.as_bytes()).await.unwrap();
            visitor.shutdown().await.unwrap();
            let mut back = Vec::new();
            let read = tokio::time::timeout(std::time::Duration::from_secs(10), visitor.read_to_end(&mut back));
            read.await.expect("the pooled relay answered").unwrap();
            assert_eq!(back, sent.as_bytes());
        }
        for task in [server.abort_handle(), client.abort_handle(), echo.abort_handle()] {
            task.abort();
        }
    }
}
