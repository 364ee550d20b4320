//! The full-size load run (issue 9): [`Settings::storm_devices`] simulated
//! devices ([`crate::sim`], serving HTTP themselves) online on one
//! `terrierd`; [`Settings::storm_visitors`] concurrent visitors relayed
//! through them for [`Settings::storm_visit_secs`] (every request must be
//! answered 200); then every device drops its control socket at the same
//! moment and reconnects as the agent does (full-jitter backoff from
//! 500 ms), and the time until all are back, with their subdomains, is
//! measured. Also terrierd's RSS per idle device.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::Rng;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout_at, Instant};

use crate::lab::{self, Extra};
use crate::parts::Settings;
use crate::procs::Binaries;
use crate::sim::{self, Backoff, Leave};
use crate::visit::{self, Visitor};

/// Control handshakes in flight at once while the devices first come online.
const HANDSHAKES_AT_ONCE: usize = 64;
/// Requests per visitor connection before it is closed and a new one opened.
const REQUESTS_PER_CONNECTION: usize = 10;
/// Attempts a device makes to come back before it gives up.
const MAX_ATTEMPTS: u32 = 30;
/// The goal for the whole storm.
const STORM_GOAL: Duration = Duration::from_secs(30);

/// Where the devices are in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Online and serving.
    Serve,
    /// Drop the control socket now and reconnect.
    Drop,
}

/// What a device reports.
#[derive(Debug)]
enum Event {
    /// Online the first time, with its subdomain.
    Online(usize, String),
    /// Back after the drop, with its subdomain and failed attempts.
    Back(usize, String, u32),
    /// Could not get online.
    Failed(String),
}

/// Runs the storm part and prints its table (also written to `out` if given).
pub async fn run(bins: &Binaries, s: &Settings, out: Option<&Path>, commands: &mut Vec<String>) -> anyhow::Result<()> {
    let count = s.storm_devices;
    let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(0);
    let needed = (count + 2 * s.storm_visitors) as u64 + 512;
    if nofile < needed {
        bail!("open-file limit {nofile} < {needed} needed for {count} devices: raise `ulimit -Hn`");
    }
    let dir = tempfile::Builder::new().prefix("terrier-bench-storm-").tempdir()?;
    let token = format!("bench-admin-{:032x}", rand::rng().random::<u128>());
    let extra = Extra { sets: &[], admin_token: Some(&token) };
    let (server, addr) = lab::start_terrierd_with(bins, dir.path(), &extra, commands).await?;
    let rss_empty = server.settled_rss_kib().await?;

    // 1. Online, a few handshakes at a time.
    let (phase, phase_rx) = watch::channel(Phase::Serve);
    let (events, mut reports) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    let mut devices = JoinSet::new();
    let started = Instant::now();
    for index in 0..count {
        devices.spawn(device(addr, index, gate.clone(), phase_rx.clone(), events.clone()));
    }
    drop(events);
    let mut subdomains = vec![String::new(); count];
    let until = started + Duration::from_secs(60 + count as u64 / 100);
    for _ in 0..count {
        match timeout_at(until, reports.recv()).await {
            Ok(Some(Event::Online(i, sub))) => subdomains[i] = sub,
            Ok(Some(Event::Failed(e))) => bail!("a device did not come online: {e:#}"),
            Ok(Some(Event::Back(..)) | None) | Err(_) => bail!("not every device online by {until:?}"),
        }
    }
    let online_took = started.elapsed();
    let rss_online = server.settled_rss_kib().await?;
    let fds_online = server.open_fds()?;
    eprintln!("storm: {count} devices online in {online_took:.1?}; terrierd RSS {rss_empty} → {rss_online} KiB");

    // 2. Visitors through them.
    let visits = visitors(addr, &subdomains, s.storm_visitors, Duration::from_secs(s.storm_visit_secs)).await;
    let fds_visited = server.open_fds()?;
    eprintln!("storm: visitors: {} requests, {} errors", visits.ok, visits.errors);

    // 3. The storm.
    let dropped = Instant::now();
    phase.send_replace(Phase::Drop);
    let until = dropped + Duration::from_secs(120);
    let (mut back, mut changed, mut retries, mut max_attempts, mut first_failure) = (0, 0, 0u64, 0, None);
    while back < count {
        match timeout_at(until, reports.recv()).await {
            Ok(Some(Event::Back(i, sub, failed))) => {
                back += 1;
                changed += usize::from(sub != subdomains[i]);
                retries += u64::from(failed);
                max_attempts = max_attempts.max(failed + 1);
            }
            Ok(Some(Event::Failed(e))) => {
                first_failure.get_or_insert(e);
            }
            Ok(Some(Event::Online(..))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let storm_took = dropped.elapsed();
    let counted = wait_counted(addr, &token, count, until).await;
    let server_took = dropped.elapsed();
    let rss_after = server.settled_rss_kib().await?;
    eprintln!("storm: {back} of {count} back in {storm_took:.1?} ({retries} failed attempts)");
    devices.shutdown().await;
    server.stop().await;

    let per_device = rss_online.saturating_sub(rss_empty) as f64 / count as f64;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Storm run {} (`cargo run --release -p terrier-bench -- storm`), commit `{}`, load average at end {}.\n",
        crate::report::shell("date -u '+%Y-%m-%d %H:%M UTC'"),
        crate::report::shell("git describe --always --dirty"),
        crate::report::load_average(),
    );
    md.push_str("| figure | value | goal |\n|---|---:|---|\n");
    let mut line = |figure: String, value: String, goal: &str| {
        let _ = writeln!(md, "| {figure} | {value} | {goal} |");
    };
    line(
        format!("{count} devices online ({HANDSHAKES_AT_ONCE} handshakes at a time)"),
        format!("{:.1} s ({:.0} handshakes/s)", online_took.as_secs_f64(), count as f64 / online_took.as_secs_f64()),
        "",
    );
    line(
        format!("terrierd RSS per idle device, {count} devices"),
        format!("{per_device:.1} KiB ({} → {})", mib(rss_empty), mib(rss_online)),
        "≤ 16 KiB",
    );
    line("terrierd open FDs: devices online / after the visitors".into(), format!("{fds_online} / {fds_visited}"), "");
    line(
        format!(
            "{} concurrent visitors for {} s through {} devices",
            s.storm_visitors,
            s.storm_visit_secs,
            s.storm_visitors.min(count)
        ),
        format!(
            "{} requests answered 200 ({:.0} req/s), {} connections",
            visits.ok,
            visits.ok as f64 / s.storm_visit_secs.max(1) as f64,
            visits.connections
        ),
        "",
    );
    line("visitor errors (non-200, transport, timeout)".into(), format!("**{}**", visits.errors), "0");
    line(
        format!("reconnect storm: all {count} dropped at once, back with full-jitter backoff"),
        if back == count {
            format!("**{:.1} s**", storm_took.as_secs_f64())
        } else {
            format!("**{back} of {count}** in {:.0} s", storm_took.as_secs_f64())
        },
        "≤ 30 s",
    );
    line(
        "storm: failed attempts (retried with backoff) / most attempts by one device".into(),
        format!("{retries} / {max_attempts}"),
        "",
    );
    line("storm: subdomain changed".into(), format!("{changed} of {back}"), "0");
    line(
        "storm: server counts every device online again".into(),
        match counted {
            Ok(()) => format!("{:.1} s", server_took.as_secs_f64()),
            Err(e) => format!("no: {e:#}"),
        },
        "",
    );
    line("terrierd RSS after the storm".into(), mib(rss_after), "");
    if let Some(e) = &visits.first_error {
        let _ = writeln!(md, "\nFirst visitor error: {e}");
    }
    if let Some(e) = &first_failure {
        let _ = writeln!(md, "\nFirst device that gave up: {e}");
    }
    let _ = writeln!(
        md,
        "\nHow: terrierd `--log warn --set limits.control_handshakes_per_ip_per_minute=0` (all devices share \
         127.0.0.1), open-file limit {nofile} (inherited from the bench). Devices: \
         `ws://<terrierd>/v1/control?name=storm-N&http=1` from this process, each answering `open` with a data \
         socket and HTTP answers from memory. Visitors: `GET /` with `Host: <sub>.localhost` to terrierd, \
         {REQUESTS_PER_CONNECTION} keep-alive requests per connection, visitor i on device i × {}. Storm: every \
         device task drops its socket at once (FIN, no close frame), sleeps U[0, 0.5 s · 2^n] (n = failed \
         attempts, ceiling 60 s) and reconnects; a failed attempt (10 s handshake timeout) retries the same way.",
        count / s.storm_visitors.max(1)
    );
    println!("\n{md}");
    if let Some(path) = out {
        crate::report::write_block(path, "storm", &md)?;
        println!("written to {}", path.display());
    }
    anyhow::ensure!(visits.errors == 0, "{} visitor errors", visits.errors);
    anyhow::ensure!(back == count, "only {back} of {count} devices came back");
    anyhow::ensure!(storm_took <= STORM_GOAL, "the storm took {storm_took:?}, over {STORM_GOAL:?}");
    Ok(())
}

/// One device: online (gated), serving until the drop, back with the
/// agent's backoff, serving until aborted.
async fn device(
    server: SocketAddr,
    index: usize,
    gate: Arc<Semaphore>,
    mut phase: watch::Receiver<Phase>,
    events: mpsc::UnboundedSender<Event>,
) {
    let name = format!("storm-{index}");
    let first = async {
        let _permit = gate.acquire().await.ok()?;
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                sleep(Backoff::AGENT.delay(attempt)).await;
            }
            match sim::open(server, &name).await {
                Ok(opened) => return Some(Ok(opened)),
                Err(e) => last = Some(e),
            }
        }
        last.map(Err)
    };
    let (socket, welcome) = match first.await {
        Some(Ok(opened)) => opened,
        Some(Err(e)) => {
            let _ = events.send(Event::Failed(format!("{name}: {e:#}")));
            return;
        }
        None => return,
    };
    let _ = events.send(Event::Online(index, welcome.subdomain.clone()));
    let until = async {
        let _ = phase.wait_for(|p| *p == Phase::Drop).await;
        Leave::Abrupt
    };
    sim::serve(socket, server, &welcome.session, until).await;
    match sim::reconnect(server, &name, Backoff::AGENT, MAX_ATTEMPTS).await {
        Ok((socket, welcome, failed)) => {
            let _ = events.send(Event::Back(index, welcome.subdomain.clone(), failed));
            sim::serve(socket, server, &welcome.session, std::future::pending()).await;
        }
        Err(e) => {
            let _ = events.send(Event::Failed(format!("{e:#}")));
        }
    }
}

/// What the visitors saw.
#[derive(Debug, Default)]
struct Visits {
    ok: u64,
    errors: u64,
    connections: u64,
    first_error: Option<String>,
}

/// `visitors` concurrent visitor loops for `length`, visitor i on device
/// i × (devices / visitors).
async fn visitors(server: SocketAddr, subdomains: &[String], visitors: usize, length: Duration) -> Visits {
    let (ok, errors, connections) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let stride = (subdomains.len() / visitors.max(1)).max(1);
    let until = Instant::now() + length;
    let mut loops = JoinSet::new();
    for i in 0..visitors {
        let sub = subdomains[(i * stride) % subdomains.len()].clone();
        let (ok, errors, connections, first_error) =
            (ok.clone(), errors.clone(), connections.clone(), first_error.clone());
        loops.spawn(async move {
            let fail = |e: String| {
                errors.fetch_add(1, Ordering::Relaxed);
                first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
            };
            while Instant::now() < until {
                let mut visitor = match Visitor::connect(server, &sub).await {
                    Ok(v) => v,
                    Err(e) => {
                        fail(format!("connect: {e:#}"));
                        continue;
                    }
                };
                connections.fetch_add(1, Ordering::Relaxed);
                for _ in 0..REQUESTS_PER_CONNECTION {
                    match visitor.get("/").await {
                        Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(status) => {
                            fail(format!("{sub}: status {status}"));
                            break;
                        }
                        Err(e) => {
                            fail(format!("{sub}: {e:#}"));
                            break;
                        }
                    };
                }
            }
        });
    }
    while loops.join_next().await.is_some() {}
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    Visits {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        connections: connections.load(Ordering::Relaxed),
        first_error,
    }
}

/// Waits until the admin API counts `count` devices online (old sessions
/// gone, new ones registered).
async fn wait_counted(server: SocketAddr, token: &str, count: usize, until: Instant) -> anyhow::Result<()> {
    loop {
        let info = visit::server_info(server, token).await?;
        let online = info["devices_online"].as_u64().context("no devices_online")?;
        if online == count as u64 {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("{online} of {count} counted online");
        }
        sleep(Duration::from_millis(100)).await;
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
