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

/// Storms run one after the other: the second shows whether the memory
/// the first left behind is kept for reuse or leaked.
const ROUNDS: u32 = 2;

/// How long after a storm memory may take to come back (issue 28: within
/// 20 % of the steady state a minute after each storm).
const SETTLE: Duration = Duration::from_secs(60);

/// What a device reports.
#[derive(Debug)]
enum Event {
    /// Online the first time, with its subdomain.
    Online(usize, String),
    /// Back after a drop, with its subdomain and failed attempts.
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
    let extra = Extra { admin_token: Some(&token), ..Extra::default() };
    let (server, addr) = lab::start_terrierd_with(bins, dir.path(), &extra, commands).await?;
    let rss_empty = server.settled_rss_kib().await?;

    // 1. Online, a few handshakes at a time.
    // The number of storms so far: each increment drops every device.
    let (storms, storms_rx) = watch::channel(0u32);
    let (events, mut reports) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    let mut devices = JoinSet::new();
    let started = Instant::now();
    for index in 0..count {
        devices.spawn(device(addr, index, gate.clone(), storms_rx.clone(), events.clone()));
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
    let anon_online = server.anon_rss_kib()?;
    let fds_online = server.open_fds()?;
    eprintln!("storm: {count} devices online in {online_took:.1?}; terrierd RSS {rss_empty} → {rss_online} KiB");

    // 2. Visitors through them.
    let visits = visitors(addr, &subdomains, s.storm_visitors, Duration::from_secs(s.storm_visit_secs)).await;
    let fds_visited = server.open_fds()?;
    let anon_visited = server.anon_rss_kib()?;
    eprintln!("storm: visitors: {} requests, {} errors", visits.ok, visits.errors);

    // 3. The storms.
    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        let outcome = storm(&storms, round, &mut reports, &subdomains).await;
        let counted = wait_counted(addr, &token, count, outcome.dropped + Duration::from_secs(120)).await;
        let server_took = outcome.dropped.elapsed();
        let rss = server.settled_rss_kib().await?;
        eprintln!("storm {round}: {} of {count} back in {:.1?}", outcome.back, outcome.took);
        tokio::time::sleep(SETTLE).await;
        let anon_later = server.anon_rss_kib()?;
        eprintln!("storm {round}: RssAnon {anon_later} KiB {SETTLE:?} later (online: {anon_online} KiB)");
        rounds.push((outcome, counted.map(|()| server_took), (rss, anon_later)));
    }
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
    for (round, (o, counted, rss)) in rounds.iter().enumerate() {
        let n = round + 1;
        line(
            format!("reconnect storm {n}: all {count} dropped at once, back with full-jitter backoff"),
            if o.back == count {
                format!("**{:.1} s**", o.took.as_secs_f64())
            } else {
                format!("**{} of {count}** in {:.0} s", o.back, o.took.as_secs_f64())
            },
            "≤ 30 s",
        );
        line(
            format!("storm {n}: failed attempts (retried with backoff) / most attempts by one device"),
            format!("{} / {}", o.retries, o.max_attempts),
            "",
        );
        line(format!("storm {n}: subdomain changed"), format!("{} of {}", o.changed, o.back), "0");
        line(
            format!("storm {n}: server counts every device online again"),
            match counted {
                Ok(took) => format!("{:.1} s", took.as_secs_f64()),
                Err(e) => format!("no: {e:#}"),
            },
            "",
        );
        let (rss, anon_later) = rss;
        line(format!("terrierd RSS after storm {n}"), mib(*rss), "");
        line(
            format!(
                "terrierd RssAnon {} s after storm {n} (all online: {}, after the visitors: {})",
                SETTLE.as_secs(),
                mib(anon_online),
                mib(anon_visited)
            ),
            format!("{} ({:.2}×)", mib(*anon_later), *anon_later as f64 / anon_online.max(1) as f64),
            "≤ 1.2×",
        );
    }
    for (o, _, _) in &rounds {
        if let Some(e) = &o.first_failure {
            let _ = writeln!(md, "\nFirst device that gave up: {e}");
            break;
        }
    }
    if let Some(e) = &visits.first_error {
        let _ = writeln!(md, "\nFirst visitor error: {e}");
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
    for (o, _, _) in &rounds {
        anyhow::ensure!(o.back == count, "only {} of {count} devices came back", o.back);
        anyhow::ensure!(o.took <= STORM_GOAL, "a storm took {:?}, over {STORM_GOAL:?}", o.took);
    }
    Ok(())
}

/// What one storm did.
#[derive(Debug)]
struct Storm {
    dropped: Instant,
    took: Duration,
    back: usize,
    changed: usize,
    retries: u64,
    max_attempts: u32,
    first_failure: Option<String>,
}

/// Drops every device (storm number `round`) and waits (at most 120 s)
/// until each reported back.
async fn storm(
    storms: &watch::Sender<u32>,
    round: u32,
    reports: &mut mpsc::UnboundedReceiver<Event>,
    subdomains: &[String],
) -> Storm {
    let dropped = Instant::now();
    storms.send_replace(round);
    let until = dropped + Duration::from_secs(120);
    let mut o =
        Storm { dropped, took: Duration::ZERO, back: 0, changed: 0, retries: 0, max_attempts: 0, first_failure: None };
    while o.back < subdomains.len() {
        match timeout_at(until, reports.recv()).await {
            Ok(Some(Event::Back(i, sub, failed))) => {
                o.back += 1;
                o.changed += usize::from(sub != subdomains[i]);
                o.retries += u64::from(failed);
                o.max_attempts = o.max_attempts.max(failed + 1);
            }
            Ok(Some(Event::Failed(e))) => {
                o.first_failure.get_or_insert(e);
            }
            Ok(Some(Event::Online(..))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    o.took = dropped.elapsed();
    o
}

/// One device: online (gated), serving; at every storm it drops its socket
/// and comes back with the agent's backoff. Ends when aborted.
async fn device(
    server: SocketAddr,
    index: usize,
    gate: Arc<Semaphore>,
    mut storms: watch::Receiver<u32>,
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
    let (mut socket, mut session, mut seen) = (socket, welcome.session, 0);
    loop {
        let until = async {
            let _ = storms.wait_for(|n| *n > seen).await;
            Leave::Abrupt
        };
        sim::serve(socket, server, &session, until).await;
        seen = *storms.borrow();
        match sim::reconnect(server, &name, Backoff::AGENT, MAX_ATTEMPTS).await {
            Ok((again, welcome, failed)) => {
                let _ = events.send(Event::Back(index, welcome.subdomain, failed));
                (socket, session) = (again, welcome.session);
            }
            Err(e) => {
                let _ = events.send(Event::Failed(format!("{e:#}")));
                return;
            }
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
