//! The agent's own figures (issue 5 goals): stripped x86_64 size of the
//! size-tuned build (`--profile release-agent`), its RSS idle with one
//! control socket and with 100 concurrent streams open, and how long after
//! the server comes back it reconnects, compared with the backoff delay it
//! announced.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::time::{sleep, timeout, Instant};

use crate::procs::{self, Binaries, Proc};
use crate::report::Report;

/// Concurrent streams held open for the loaded RSS figure.
const STREAMS: usize = 100;
/// Longest wait between the agent's reconnect attempts in this run.
const BACKOFF_MAX: &str = "2s";

/// The size-tuned agent: built with `cargo build --profile release-agent`
/// unless `no_build`, found in `target/release-agent/terrier`.
pub async fn size_tuned_agent(no_build: bool) -> anyhow::Result<PathBuf> {
    if !no_build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        println!("building: cargo build --profile release-agent -p terrier-agent");
        let status = Command::new(cargo)
            .args(["build", "--profile", "release-agent", "-p", "terrier-agent", "--bin", "terrier"])
            .current_dir(procs::workspace_root())
            .status()
            .await
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --profile release-agent failed ({status})");
        }
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or(procs::workspace_root().join("target"));
    let bin = target.join("release-agent/terrier");
    if !bin.is_file() {
        bail!("{} not found: build it with cargo build --profile release-agent -p terrier-agent", bin.display());
    }
    Ok(bin)
}

/// The debug `terrierd` (and agent) from `cargo build`, for the agent part
/// when no release build exists: the server's build does not change the
/// agent's figures.
pub fn debug_binaries() -> anyhow::Result<Binaries> {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or(procs::workspace_root().join("target"));
    let bins = Binaries { terrierd: target.join("debug/terrierd"), terrier: target.join("debug/terrier") };
    if !bins.terrierd.is_file() {
        bail!("no terrierd in target/release or target/debug: cargo build -p terrier-server");
    }
    Ok(bins)
}

/// Runs the agent part and adds its rows to `report`.
pub async fn run(bins: &Binaries, agent: &Path, report: &mut Report, commands: &mut Vec<String>) {
    let size = std::fs::metadata(agent).map(|m| m.len());
    report.value(
        "agent binary, stripped x86_64 (release-agent profile)".into(),
        size.map(|b| format!("{:.2} MB ({b} bytes)", b as f64 / 1e6)).map_err(|e| e.to_string()),
        "≤ 2.5 MB",
    );
    if let Err(e) = measure(bins, agent, report, commands).await {
        report.note(format!("agent part failed: {e:#}"));
    }
}

async fn measure(bins: &Binaries, agent: &Path, report: &mut Report, commands: &mut Vec<String>) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("terrier-bench-agent-").tempdir()?;
    let echo = start_echo().await?;
    let port = procs::free_port()?;
    let mut server = start_server(bins, dir.path(), port, commands).await?;

    let args = [
        "--server".to_owned(),
        format!("http://127.0.0.1:{port}"),
        "--name".into(),
        "bench-agent".into(),
        "--tcp".into(),
        format!("echo={echo}"),
        "--backoff-max".into(),
        BACKOFF_MAX.into(),
        "--output".into(),
        "json".into(),
        "--log".into(),
        "warn".into(),
    ];
    let mut cmd = Command::new(agent);
    cmd.args(&args).env_remove("TERRIER_SERVER").env_remove("TERRIER_NAME").env_remove("TERRIER_CONFIG");
    commands.push(format!("{} {}", agent.display(), args.join(" ")));
    let (proc, line) =
        Proc::spawn_until_line("agent", cmd, dir.path(), |l| l.contains(r#""event":"connected""#)).await?;
    let event: serde_json::Value = serde_json::from_str(&line)?;
    let public = event["tcp"][0]["port"].as_u64().context("no public port in the connected event")?;
    let public = SocketAddr::from(([127, 0, 0, 1], u16::try_from(public)?));

    let idle = proc.settled_rss_kib().await?;
    report.value("agent RSS, idle, one control socket".into(), Ok(mib(idle)), "≤ 4 MB");

    let streams = open_streams(public, STREAMS).await?;
    let loaded = proc.settled_rss_kib().await?;
    report.value(format!("agent RSS, {STREAMS} concurrent streams open"), Ok(mib(loaded)), "");
    drop(streams);

    // Server down, then back on the same port: time from "listening again" to "connected".
    server.stop().await;
    sleep(Duration::from_secs(3)).await;
    let log = dir.path().join("agent.log");
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    let back = Instant::now();
    server = start_server(bins, dir.path(), port, commands).await?;
    let (took, delay) = wait_reconnect(&log, before, back).await?;
    report.value(
        "agent reconnect after the server is back".into(),
        Ok(format!("{:.2} s (its backoff delay then: {delay:.2} s, backoff max {BACKOFF_MAX})", took.as_secs_f64())),
        "≤ backoff delay + 1 s",
    );
    proc.stop().await;
    server.stop().await;
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A TCP echo service in this process: the device's local service.
async fn start_echo() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(addr)
}

/// Opens `n` visitor connections through the tunnel, each proven live by an echo.
async fn open_streams(public: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(public).await.with_context(|| format!("stream {i}"))?;
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        timeout(Duration::from_secs(10), s.read_exact(&mut b))
            .await
            .with_context(|| format!("echo on stream {i}"))??;
        open.push(s);
    }
    Ok(open)
}

/// Starts terrierd on 127.0.0.1:`port` with its data in `dir` (the same on restart).
async fn start_server(bins: &Binaries, dir: &Path, port: u16, commands: &mut Vec<String>) -> anyhow::Result<Proc> {
    let listen = format!("127.0.0.1:{port}");
    let data = dir.join("terrierd-data");
    let mut cmd = Command::new(&bins.terrierd);
    cmd.args(["--listen", &listen, "--domain", "localhost", "--tcp-ports", crate::lab::TCP_PORTS, "--log", "warn"])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("TERRIERD_CONFIG")
        .env_remove("TERRIERD_STORE");
    commands.push(format!("{} --listen {listen} --data-dir <tmp> (agent part)", bins.terrierd.display()));
    let (proc, _) =
        Proc::spawn_until_line("terrierd-agent-part", cmd, dir, |l| l.starts_with("terrierd listening")).await?;
    Ok(proc)
}

/// Waits for a `connected` event after byte `from` of the agent's log;
/// returns the time since `back` and the last backoff delay announced before it.
async fn wait_reconnect(log: &Path, from: usize, back: Instant) -> anyhow::Result<(Duration, f64)> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let new = text.get(from..).unwrap_or_default();
        if new.contains(r#""event":"connected""#) {
            let took = back.elapsed();
            let all = &text[..from + new.find(r#""event":"connected""#).unwrap_or(new.len())];
            let delay = all
                .lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|e| e["in_secs"].as_f64())
                .unwrap_or(0.0);
            return Ok((took, delay));
        }
        if Instant::now() > until {
            bail!("the agent did not reconnect within 30 s");
        }
        sleep(Duration::from_millis(20)).await;
    }
}
