//! The soak (issue 9): churn against one `terrierd` for a set time while
//! its RSS, open file descriptors and live tokio tasks are sampled; after
//! the churn stops they must come back to the baseline (±10 %).
//!
//! Churn: [`Settings::soak_devices`] simulated devices ([`crate::sim`])
//! each stay online for a random time (mean 60 s), then leave (half with a
//! close frame, half by dropping the TCP socket) and come back after the
//! agent's backoff; visitors open about [`Settings::soak_rate`] streams/s
//! through random devices: 1–3 keep-alive requests (some with a 4 KiB
//! body), or a 4 MiB download dropped after 64 KiB (5 %), or an upload
//! dropped after 16 KiB of 1 MiB (5 %).
//!
//! Phases: devices online, a 60 s warm-up churn (buffers and allocator
//! arenas reach their working size), settle, **baseline**; churn for
//! `--minutes`, sampled every `--sample-secs`; settle, **end**. Settle =
//! every device online, no visitor, then [`SETTLE`] (longer than the idle
//! keep-alive timeout the server is given).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};

use crate::lab::{self, Extra};
use crate::parts::Settings;
use crate::procs::{Binaries, Proc};
use crate::sim::{self, Backoff, Leave};
use crate::visit::{self, Visitor};

/// Idle keep-alive connections to devices close after this (`limits.http_idle_timeout`).
const HTTP_IDLE_TIMEOUT: &str = "15s";
/// Quiet time before a baseline or end sample: longer than [`HTTP_IDLE_TIMEOUT`].
const SETTLE: Duration = Duration::from_secs(30);
/// Warm-up churn before the baseline.
const WARM_UP: Duration = Duration::from_secs(60);
/// Mean time a device stays online while churning.
const MEAN_ONLINE: Duration = Duration::from_secs(60);
/// Concurrent visitor loops; together they pace [`Settings::soak_rate`].
const VISITOR_LOOPS: usize = 16;
/// Allowed difference from the baseline after the churn.
const TOLERANCE: f64 = 0.10;

/// Counters of the churn, shared by every task.
#[derive(Debug, Default)]
struct Counters {
    /// Visitor connections (streams) opened.
    streams: AtomicU64,
    /// Requests answered 200.
    ok: AtomicU64,
    /// Answers 502/503/504: the device was between connections.
    offline: AtomicU64,
    /// Downloads and uploads dropped mid-body on purpose.
    aborted: AtomicU64,
    /// Anything else: other statuses, transport errors, timeouts.
    errors: AtomicU64,
    /// Device connections made (first ones and reconnects).
    connects: AtomicU64,
}

/// One sample of the server.
#[derive(Debug, Clone)]
struct Sample {
    label: String,
    at: Duration,
    rss_kib: u64,
    fds: usize,
    tasks: u64,
    online: u64,
    streams: u64,
    errors: u64,
}

/// Runs the soak and prints its table (also written to `out` if given);
/// fails when a figure did not come back to the baseline or a visitor
/// saw an error.
pub async fn run(bins: &Binaries, s: &Settings, out: Option<&Path>, commands: &mut Vec<String>) -> anyhow::Result<()> {
    // The commit measured: read now, the tree may change during a long run.
    let commit = crate::report::shell("git describe --always --dirty");
    let dir = tempfile::Builder::new().prefix("terrier-bench-soak-").tempdir()?;
    let token = format!("bench-admin-{:032x}", rand::rng().random::<u128>());
    let idle = format!("limits.http_idle_timeout={HTTP_IDLE_TIMEOUT}");
    let extra = Extra { sets: &[&idle], admin_token: Some(&token), ..Extra::default() };
    let (server, addr) = lab::start_terrierd_with(bins, dir.path(), &extra, commands).await?;
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let (churn, churn_rx) = watch::channel(false);
    let subdomains: Arc<Vec<std::sync::OnceLock<String>>> =
        Arc::new((0..s.soak_devices).map(|_| std::sync::OnceLock::new()).collect());

    let mut devices = JoinSet::new();
    for index in 0..s.soak_devices {
        let (counters, churn, subdomains) = (counters.clone(), churn_rx.clone(), subdomains.clone());
        devices.spawn(device(addr, index, churn, counters, subdomains));
    }
    let mut samples = Vec::new();
    let probe = Probe { server: &server, addr, token: &token, counters: &counters, started };
    probe.wait_online(s.soak_devices).await?;
    sleep(SETTLE).await;
    samples.push(probe.sample("cold (devices online, no traffic yet)").await?);

    // Warm-up churn, then the baseline.
    let (visitors, stop_visitors) = start_visitors(addr, s.soak_rate, subdomains.clone(), counters.clone());
    churn.send_replace(true);
    // `--minutes 0` is a smoke run: 10 s of warm-up, 30 s of churn.
    let warm_up = if s.minutes == 0 { Duration::from_secs(10) } else { WARM_UP };
    sleep(warm_up).await;
    churn.send_replace(false);
    stop(visitors, stop_visitors).await;
    probe.wait_online(s.soak_devices).await?;
    sleep(SETTLE).await;
    let baseline = probe.sample("baseline (after warm-up, settled)").await?;
    samples.push(baseline.clone());
    let before = Snapshot::of(&counters);

    // The soak.
    let (visitors, stop_visitors) = start_visitors(addr, s.soak_rate, subdomains.clone(), counters.clone());
    churn.send_replace(true);
    let length = if s.minutes == 0 { Duration::from_secs(30) } else { Duration::from_secs(s.minutes * 60) };
    let until = Instant::now() + length;
    let every = Duration::from_secs(s.sample_secs.max(1));
    let mut next = Instant::now() + every;
    while next <= until {
        tokio::time::sleep_until(next).await;
        let sample = probe.sample("churn").await?;
        eprintln!("{}", row(&sample, &baseline));
        samples.push(sample);
        next += every;
    }
    tokio::time::sleep_until(until).await;
    churn.send_replace(false);
    stop(visitors, stop_visitors).await;
    let churned = Snapshot::of(&counters).minus(&before);
    probe.wait_online(s.soak_devices).await?;
    sleep(SETTLE).await;
    let end = probe.sample("end (churn stopped, settled)").await?;
    samples.push(end.clone());
    devices.shutdown().await;
    server.stop().await;

    let verdict = [
        ("RSS", baseline.rss_kib as f64, end.rss_kib as f64),
        ("open FDs", baseline.fds as f64, end.fds as f64),
        ("tokio tasks", baseline.tasks as f64, end.tasks as f64),
    ];
    let markdown = table(s, &commit, &samples, &baseline, &churned, &verdict);
    println!("\n{markdown}");
    if let Some(path) = out {
        crate::report::write_block(path, "soak", &markdown)?;
        println!("written to {}", path.display());
    }
    let drifted: Vec<String> = verdict
        .iter()
        .filter(|(_, base, end)| (end - base).abs() > TOLERANCE * base.max(1.0))
        .map(|(what, base, end)| format!("{what} {base} → {end}"))
        .collect();
    anyhow::ensure!(drifted.is_empty(), "not back to baseline ±10 %: {}", drifted.join(", "));
    anyhow::ensure!(churned.errors == 0, "{} visitor errors during the churn", churned.errors);
    Ok(())
}

/// Reads the server's figures.
struct Probe<'a> {
    server: &'a Proc,
    addr: SocketAddr,
    token: &'a str,
    counters: &'a Counters,
    started: Instant,
}

impl Probe<'_> {
    async fn sample(&self, label: &str) -> anyhow::Result<Sample> {
        let info = visit::server_info(self.addr, self.token).await?;
        Ok(Sample {
            label: label.to_owned(),
            at: self.started.elapsed(),
            rss_kib: self.server.rss_kib()?,
            fds: self.server.open_fds()?,
            tasks: info["tasks_alive"].as_u64().context("no tasks_alive in server info")?,
            online: info["devices_online"].as_u64().unwrap_or(0),
            streams: self.counters.streams.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
        })
    }

    /// Waits (at most 3 minutes) until the server counts `count` devices online.
    async fn wait_online(&self, count: usize) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(180);
        loop {
            let info = visit::server_info(self.addr, self.token).await?;
            if info["devices_online"].as_u64() == Some(count as u64) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < until, "not all {count} devices online after 3 minutes: {info}");
            sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Counter values at one moment.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    streams: u64,
    ok: u64,
    offline: u64,
    aborted: u64,
    errors: u64,
    connects: u64,
}

impl Snapshot {
    fn of(c: &Counters) -> Self {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Self {
            streams: get(&c.streams),
            ok: get(&c.ok),
            offline: get(&c.offline),
            aborted: get(&c.aborted),
            errors: get(&c.errors),
            connects: get(&c.connects),
        }
    }

    fn minus(&self, o: &Self) -> Self {
        Self {
            streams: self.streams - o.streams,
            ok: self.ok - o.ok,
            offline: self.offline - o.offline,
            aborted: self.aborted - o.aborted,
            errors: self.errors - o.errors,
            connects: self.connects - o.connects,
        }
    }
}

/// One simulated device: online, serving, leaving and coming back while
/// `churn` is on; online and serving while it is off. Ends when aborted.
async fn device(
    server: SocketAddr,
    index: usize,
    mut churn: watch::Receiver<bool>,
    counters: Arc<Counters>,
    subdomains: Arc<Vec<std::sync::OnceLock<String>>>,
) {
    let name = format!("soak-{index}");
    let mut first = true;
    loop {
        let backoff =
            if first { Backoff { min: Duration::from_secs(2), max: Duration::from_secs(10) } } else { Backoff::AGENT };
        first = false;
        let Ok((socket, welcome, _)) = sim::reconnect(server, &name, backoff, 1000).await else { continue };
        counters.connects.fetch_add(1, Ordering::Relaxed);
        let _ = subdomains[index].set(welcome.subdomain.clone());
        let lifetime = Duration::from_secs_f64(rand::rng().random::<f64>() * 2.0 * MEAN_ONLINE.as_secs_f64());
        let deadline = Instant::now() + lifetime;
        let until = async {
            loop {
                if *churn.borrow_and_update() {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {
                            return if rand::rng().random_bool(0.5) { Leave::Clean } else { Leave::Abrupt };
                        }
                        changed = churn.changed() => if changed.is_err() { std::future::pending::<()>().await },
                    }
                } else if churn.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        sim::serve(socket, server, &welcome.session, until).await;
    }
}

/// Starts [`VISITOR_LOOPS`] visitor loops pacing `rate` streams/s in all.
fn start_visitors(
    server: SocketAddr,
    rate: u64,
    subdomains: Arc<Vec<std::sync::OnceLock<String>>>,
    counters: Arc<Counters>,
) -> (JoinSet<()>, watch::Sender<bool>) {
    let (stop, stopped) = watch::channel(false);
    let mut loops = JoinSet::new();
    let per_loop = Duration::from_secs_f64(VISITOR_LOOPS as f64 / rate.max(1) as f64);
    for _ in 0..VISITOR_LOOPS {
        let (subdomains, counters, stopped) = (subdomains.clone(), counters.clone(), stopped.clone());
        loops.spawn(async move {
            let mut next = Instant::now();
            while !*stopped.borrow() {
                let pick = rand::rng().random_range(0..subdomains.len());
                if let Some(sub) = subdomains[pick].get() {
                    one_visit(server, sub, &counters).await;
                }
                next += per_loop;
                if next > Instant::now() {
                    tokio::time::sleep_until(next).await;
                } else {
                    next = Instant::now();
                }
            }
        });
    }
    (loops, stop)
}

/// Stops the visitor loops; each finishes its visit in progress.
async fn stop(mut loops: JoinSet<()>, stop: watch::Sender<bool>) {
    stop.send_replace(true);
    while loops.join_next().await.is_some() {}
}

/// One visitor connection of a random kind, counted.
async fn one_visit(server: SocketAddr, subdomain: &str, c: &Counters) {
    let count = |status: u16| match status {
        200 => c.ok.fetch_add(1, Ordering::Relaxed),
        502..=504 => c.offline.fetch_add(1, Ordering::Relaxed),
        _ => c.errors.fetch_add(1, Ordering::Relaxed),
    };
    let mut visitor = match Visitor::connect(server, subdomain).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("soak: visitor connect: {e:#}");
            c.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    c.streams.fetch_add(1, Ordering::Relaxed);
    let roll: f64 = rand::rng().random();
    if roll < 0.05 {
        match visitor.abort_download(64 << 10).await {
            Ok(200) => c.aborted.fetch_add(1, Ordering::Relaxed),
            Ok(status) => count(status),
            Err(e) => transport_error(c, "download", &e),
        };
    } else if roll < 0.10 {
        match visitor.abort_upload(1 << 20, 16 << 10).await {
            Ok(()) => c.aborted.fetch_add(1, Ordering::Relaxed),
            Err(e) => transport_error(c, "upload", &e),
        };
    } else {
        let requests = rand::rng().random_range(1..=3);
        for _ in 0..requests {
            let post = rand::rng().random_bool(0.2);
            let answer = if post { visitor.post("/form", &[b'f'; 4096]).await } else { visitor.get("/").await };
            match answer {
                Ok(status) => {
                    count(status);
                    if status != 200 {
                        break;
                    }
                }
                Err(e) => {
                    transport_error(c, "request", &e);
                    break;
                }
            }
        }
    }
}

/// A transport error or timeout: always an error (a device that leaves
/// does not end streams already on their own data sockets).
fn transport_error(c: &Counters, what: &str, e: &anyhow::Error) -> u64 {
    eprintln!("soak: {what}: {e:#}");
    c.errors.fetch_add(1, Ordering::Relaxed)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn change(base: f64, now: f64) -> String {
    format!("{:+.1} %", (now - base) * 100.0 / base.max(1.0))
}

fn row(s: &Sample, base: &Sample) -> String {
    format!(
        "| {:.1} min | {} | {} ({}) | {} ({}) | {} ({}) | {} | {} | {} |",
        s.at.as_secs_f64() / 60.0,
        s.label,
        mib(s.rss_kib),
        change(base.rss_kib as f64, s.rss_kib as f64),
        s.fds,
        change(base.fds as f64, s.fds as f64),
        s.tasks,
        change(base.tasks as f64, s.tasks as f64),
        s.online,
        s.streams,
        s.errors,
    )
}

fn table(
    s: &Settings,
    commit: &str,
    samples: &[Sample],
    base: &Sample,
    churned: &Snapshot,
    verdict: &[(&str, f64, f64)],
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Soak run {} (`cargo run --release -p terrier-bench -- soak --minutes {}`), commit `{}`: {} simulated devices \
         churning (mean {} s online, half leave with a close frame, half drop the TCP socket; reconnect with the \
         agent's backoff), visitors at about {} streams/s; server given `limits.http_idle_timeout = \"{}\"`. \
         Sampled every {} s.\n",
        crate::report::shell("date -u '+%Y-%m-%d %H:%M UTC'"),
        s.minutes,
        commit,
        s.soak_devices,
        MEAN_ONLINE.as_secs(),
        s.soak_rate,
        HTTP_IDLE_TIMEOUT,
        s.sample_secs,
    );
    md.push_str("| time | phase | terrierd RSS (vs baseline) | open FDs | tokio tasks | devices online | streams so far | errors so far |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
    for sample in samples {
        let _ = writeln!(md, "{}", row(sample, base));
    }
    let _ = writeln!(
        md,
        "\nDuring the {} min churn: {} visitor streams, {} requests answered 200, {} answered 502/503/504 (device \
         between connections), {} downloads/uploads dropped mid-body on purpose, **{} errors**; {} device connections.\n",
        s.minutes, churned.streams, churned.ok, churned.offline, churned.aborted, churned.errors, churned.connects
    );
    md.push_str("| after the churn vs baseline | baseline | end | change | within ±10 % |\n|---|---:|---:|---:|---|\n");
    for (what, base, end) in verdict {
        let ok = (end - base).abs() <= TOLERANCE * base.max(1.0);
        let _ = writeln!(
            md,
            "| {what} | {base} | {end} | {} | {} |",
            change(*base, *end),
            if ok { "yes" } else { "**no**" }
        );
    }
    md
}
