//! The parts of the benchmark. Each runs direct and tunnel traffic
//! interleaved (direct, tunnel, direct, tunnel… within every repetition) and
//! adds its rows to the [`Report`]. A failed run is noted and left out; it
//! does not end the benchmark.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::lab::{self, Endpoint, Lab, Route};
use crate::procs::Binaries;
use crate::report::{Report, Unit};
use crate::{cluster, connect, devices, iperf, rivals, wrk};

/// A wrk run with more failed answers than this share is left out.
const MAX_FAILED_SHARE: f64 = 0.01;

/// How long the wrk, iperf3 and connection loops run; the defaults keep
/// `all` around 5 minutes on 2 cores.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Repetitions of every direct/tunnel pair (at least 3 for a median that means something).
    #[arg(long, default_value_t = 3, global = true)]
    pub reps: usize,
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 5, global = true)]
    pub wrk_secs: u64,
    /// Measured seconds of each iperf3 run (plus 1 s omitted at the start).
    #[arg(long, default_value_t = 3, global = true)]
    pub iperf_secs: u64,
    /// Sequential new connections per connection run.
    #[arg(long, default_value_t = 500, global = true)]
    pub connections: usize,
    /// Numbers of simulated idle devices (comma-separated).
    #[arg(long, default_value = "1000,10000", value_delimiter = ',', global = true)]
    pub devices: Vec<usize>,
    /// Simulated devices registered into the 3-node cluster (`cluster` part).
    #[arg(long, default_value_t = 5000, global = true)]
    pub cluster_devices: usize,
    /// Simulated devices online in the `storm` part.
    #[arg(long, default_value_t = 10_000, global = true)]
    pub storm_devices: usize,
    /// Concurrent visitors relayed through them (`storm`).
    #[arg(long, default_value_t = 1000, global = true)]
    pub storm_visitors: usize,
    /// Seconds the `storm` visitors run.
    #[arg(long, default_value_t = 10, global = true)]
    pub storm_visit_secs: u64,
    /// Minutes of churn in the `soak` part (0: a 30 s smoke run).
    #[arg(long, default_value_t = 30, global = true)]
    pub minutes: u64,
    /// Simulated devices churning in the `soak` part.
    #[arg(long, default_value_t = 200, global = true)]
    pub soak_devices: usize,
    /// Visitor streams per second in the `soak` part.
    #[arg(long, default_value_t = 200, global = true)]
    pub soak_rate: u64,
    /// Seconds between the `soak` samples.
    #[arg(long, default_value_t = 60, global = true)]
    pub sample_secs: u64,
}

/// Per-repetition samples of one route.
#[derive(Debug, Default)]
struct Samples {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

/// wrk at -c32 and -c1: req/s, p50 and p99, direct against each of `routes`.
pub async fn web(lab: &Lab, s: &Settings, routes: &[Route], report: &mut Report) {
    for connections in [32, 1] {
        let mut runs: Vec<(Route, Samples)> =
            std::iter::once(Route::Direct).chain(routes.iter().copied()).map(|r| (r, Samples::default())).collect();
        for rep in 1..=s.reps {
            for (route, samples) in &mut runs {
                let what = format!("wrk -c{connections} {} rep {rep}/{}", route.label(), s.reps);
                let (rps, p50, p99) = wrk_once(lab.web(*route), connections, s, &what, report).await;
                samples.rps.push(rps);
                samples.p50.push(p50);
                samples.p99.push(p99);
            }
        }
        let Some(((_, direct), tunnels)) = runs.split_first() else { continue };
        for (route, samples) in tunnels {
            let (rps_goal, p99_goal) = match (connections, route) {
                (32, Route::Vhost) => ("≥ 0.40× (rathole 0.32×)", "≤ 3× (rathole 4.2×)"),
                (32, _) => ("≥ 0.45×", "≤ 3×"),
                _ => ("", ""),
            };
            let name = |what: &str| format!("{what}, -c{connections}, {}", route.label());
            report.ratio(name("HTTP req/s"), Unit::ReqPerSec, rps_goal, &direct.rps, &samples.rps);
            report.ratio(name("p50 latency"), Unit::Millis, "", &direct.p50, &samples.p50);
            report.ratio(name("p99 latency"), Unit::Millis, p99_goal, &direct.p99, &samples.p99);
        }
    }
}

/// One wrk run: (req/s, p50 ms, p99 ms), all NaN when it failed.
async fn wrk_once(
    endpoint: Endpoint,
    connections: u32,
    s: &Settings,
    what: &str,
    report: &mut Report,
) -> (f64, f64, f64) {
    let load = wrk::Load::new(endpoint, connections, Duration::from_secs(s.wrk_secs));
    match wrk_checked(&load, what, report).await {
        Some(r) => {
            eprintln!("{what}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms", r.requests_per_sec, r.p50_ms, r.p99_ms);
            (r.requests_per_sec, r.p50_ms, r.p99_ms)
        }
        None => (f64::NAN, f64::NAN, f64::NAN),
    }
}

/// Runs `load` once; `None` (and a note) when wrk failed or over
/// [`MAX_FAILED_SHARE`] of its requests did.
pub async fn wrk_checked(load: &wrk::Load, what: &str, report: &mut Report) -> Option<wrk::WrkResult> {
    let r = match load.run().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{what}: failed: {e:#}");
            report.note(format!("{what} failed: {}", one_line(&e)));
            return None;
        }
    };
    let failed = r.non_2xx + r.socket_errors;
    if failed > 0 {
        report.note(format!(
            "{what}: {} non-2xx answers and {} socket errors in {} requests",
            r.non_2xx, r.socket_errors, r.requests
        ));
    }
    if failed as f64 > MAX_FAILED_SHARE * r.requests.max(1) as f64 {
        report.note(format!("{what} left out: over {:.0}% failed", MAX_FAILED_SHARE * 100.0));
        return None;
    }
    Some(r)
}

/// iperf3, one stream each way, direct against the tunnel's TCP port.
pub async fn bulk(lab: &Lab, s: &Settings, report: &mut Report) {
    for reverse in [false, true] {
        let (mut direct, mut tunnel) = (Vec::new(), Vec::new());
        for rep in 1..=s.reps {
            for (route, samples) in [(Route::Direct, &mut direct), (Route::TcpPort, &mut tunnel)] {
                let what = format!("iperf3{} {} rep {rep}/{}", if reverse { " -R" } else { "" }, route.label(), s.reps);
                samples.push(iperf_once(lab.bulk(route), reverse, s, &what, report).await);
            }
        }
        let way = if reverse { "device → visitor (iperf3 -R)" } else { "visitor → device (iperf3)" };
        report.ratio(
            format!("bulk throughput, {way}, TCP port"),
            Unit::Gbits,
            "≥ 0.35× (bore 0.30×)",
            &direct,
            &tunnel,
        );
    }
}

/// One iperf3 transfer to `addr`: Gbit/s, NaN (and a note) when it failed.
async fn iperf_once(addr: SocketAddr, reverse: bool, s: &Settings, what: &str, report: &mut Report) -> f64 {
    let transfer = iperf::Transfer { addr, reverse, duration: Duration::from_secs(s.iperf_secs) };
    match transfer.run().await {
        Ok(gbits) => {
            eprintln!("{what}: {gbits:.2} Gbit/s");
            gbits
        }
        Err(e) => {
            eprintln!("{what}: failed: {e:#}");
            report.note(format!("{what} failed: {}", one_line(&e)));
            f64::NAN
        }
    }
}

/// `s.connections` new connections to `endpoint` one after another: mean
/// ms each, NaN (and a note) when the run failed.
async fn connections_once(endpoint: &Endpoint, s: &Settings, what: &str, report: &mut Report) -> f64 {
    match connect::mean_ms(endpoint, s.connections).await {
        Ok(ms) => {
            eprintln!("{what}: {ms:.3} ms each");
            ms
        }
        Err(e) => {
            eprintln!("{what}: failed: {e:#}");
            report.note(format!("{what} failed: {}", one_line(&e)));
            f64::NAN
        }
    }
}

/// `s.connections` sequential new connections with one request each; mean time per connection.
pub async fn new_connections(lab: &mut Lab, s: &Settings, report: &mut Report) {
    let no_pool = match lab.start_pool_agent().await {
        Ok(true) => None,
        Ok(false) => Some("n/a (pool not implemented)".to_owned()),
        Err(e) => {
            report.note(format!("the --pool 4 agent did not start: {}", one_line(&e)));
            Some("n/a (the --pool 4 agent did not start)".to_owned())
        }
    };
    let mut routes: Vec<(String, crate::lab::Endpoint)> = vec![
        (Route::Direct.label().to_owned(), lab.web(Route::Direct)),
        (Route::Vhost.label().to_owned(), lab.web(Route::Vhost)),
        (Route::TcpPort.label().to_owned(), lab.web(Route::TcpPort)),
    ];
    for route in [Route::Vhost, Route::TcpPort] {
        if let Some(endpoint) = lab.pool_web(route) {
            routes.push((format!("{}, --pool 4", route.label()), endpoint));
        }
    }
    let mut samples: Vec<Vec<f64>> = routes.iter().map(|_| Vec::new()).collect();
    for rep in 1..=s.reps {
        for ((label, endpoint), samples) in routes.iter().zip(&mut samples) {
            let what = format!("{} new connections {label} rep {rep}/{}", s.connections, s.reps);
            samples.push(connections_once(endpoint, s, &what, report).await);
        }
    }
    for ((label, _), tunnel) in routes.iter().zip(&samples).skip(1) {
        let goal = if label.contains("--pool") { "≤ 1.6× (rathole 2.1×)" } else { "(rathole 2.1×)" };
        report.ratio(format!("new connection + 1 request, {label}"), Unit::Millis, goal, &samples[0], tunnel);
    }
    if let Some(why) = no_pool {
        for route in [Route::Vhost, Route::TcpPort] {
            let figure = format!("new connection + 1 request, {}, --pool 4", route.label());
            report.ratio_missing(figure, Unit::Millis, "≤ 1.6× (rathole 2.1×)", why.clone());
        }
    }
    lab.stop_pool_agent().await;
}

/// terrier beside rathole and bore ([`rivals`]), every figure interleaved
/// in one run: idle memory first (before any load), then wrk -c32, bulk both
/// ways and new connections, each as a ratio to direct. terrier's new
/// connections use its `--pool 4` agent; rathole and bore have no pool.
pub async fn rivals(lab: &mut Lab, s: &Settings, report: &mut Report, commands: &mut Vec<String>) {
    let (running, missing) = rivals::start_all(lab, commands).await;
    for why in missing {
        eprintln!("{why}");
        report.note(why);
    }
    let mut processes: Vec<(String, &crate::procs::Proc)> =
        vec![("terrierd".to_owned(), &lab.server), ("terrier agent".to_owned(), &lab.agent)];
    // The floor's relays are this bench program, not a tunnel: no memory figure.
    for rival in running.iter().filter(|r| !rivals::is_floor(r.name)) {
        processes.push((format!("{} server", rival.name), &rival.server));
        processes.push((format!("{} client", rival.name), &rival.client));
    }
    // What a user pays for is the anonymous part (heap, stacks) and the
    // proportional share; VmRSS also counts code pages the kernel may drop.
    for (name, proc) in processes {
        let value = proc.settled_rss_kib().await.map(mib).map_err(|e| format!("n/a ({})", one_line(&e)));
        report.value(format!("{name} RSS, idle"), value, "");
        let anon = proc.anon_rss_kib().map(mib).map_err(|e| format!("n/a ({})", one_line(&e)));
        report.value(format!("{name} RssAnon, idle"), anon, "");
        let pss = proc.pss_kib().map(mib).map_err(|e| format!("n/a ({})", one_line(&e)));
        report.value(format!("{name} PSS, idle"), pss, "");
    }

    let mut web = rivals::web_routes(lab, &running);
    let mut samples: Vec<Samples> = web.iter().map(|_| Samples::default()).collect();
    for rep in 1..=s.reps {
        for ((label, endpoint), samples) in web.iter().zip(&mut samples) {
            let what = format!("wrk -c32 {label} rep {rep}/{}", s.reps);
            let (rps, _, p99) = wrk_once(endpoint.clone(), 32, s, &what, report).await;
            samples.rps.push(rps);
            samples.p99.push(p99);
        }
    }
    for ((label, _), tunnel) in web.iter().zip(&samples).skip(1) {
        report.ratio(format!("HTTP req/s, -c32, {label}"), Unit::ReqPerSec, "", &samples[0].rps, &tunnel.rps);
        report.ratio(format!("p99 latency, -c32, {label}"), Unit::Millis, "", &samples[0].p99, &tunnel.p99);
    }

    let mut bulk =
        vec![("direct".to_owned(), lab.bulk(Route::Direct)), ("terrier TCP port".to_owned(), lab.bulk(Route::TcpPort))];
    bulk.extend(running.iter().map(|r| (r.name.to_owned(), r.bulk)));
    for reverse in [false, true] {
        let mut gbits: Vec<Vec<f64>> = bulk.iter().map(|_| Vec::new()).collect();
        for rep in 1..=s.reps {
            for ((label, addr), samples) in bulk.iter().zip(&mut gbits) {
                let what = format!("iperf3{} {label} rep {rep}/{}", if reverse { " -R" } else { "" }, s.reps);
                samples.push(iperf_once(*addr, reverse, s, &what, report).await);
            }
        }
        let way = if reverse { "device → visitor" } else { "visitor → device" };
        for ((label, _), tunnel) in bulk.iter().zip(&gbits).skip(1) {
            report.ratio(format!("bulk, {way}, {label}"), Unit::Gbits, "", &gbits[0], tunnel);
        }
    }

    match lab.start_pool_agent().await {
        Ok(true) => {
            for (label, route) in [("terrier TCP port", Route::TcpPort), ("terrier HTTP vhost", Route::Vhost)] {
                if let (Some(at), Some(endpoint)) = (web.iter_mut().find(|(l, _)| l == label), lab.pool_web(route)) {
                    *at = (format!("{label}, --pool 4"), endpoint);
                }
            }
        }
        Ok(false) => report.note("terrier's new connections are without a pool (no --pool in this agent)".to_owned()),
        Err(e) => report.note(format!("the --pool 4 agent did not start: {}", one_line(&e))),
    }
    let mut ms: Vec<Vec<f64>> = web.iter().map(|_| Vec::new()).collect();
    for rep in 1..=s.reps {
        for ((label, endpoint), samples) in web.iter().zip(&mut ms) {
            let what = format!("{} new connections {label} rep {rep}/{}", s.connections, s.reps);
            samples.push(connections_once(endpoint, s, &what, report).await);
        }
    }
    for ((label, _), tunnel) in web.iter().zip(&ms).skip(1) {
        report.ratio(format!("new connection + 1 request, {label}"), Unit::Millis, "", &ms[0], tunnel);
    }
    lab.stop_pool_agent().await;
    for rival in running {
        rival.stop().await;
    }
}

/// Resident memory of terrierd and the agent, labelled `when` ("idle", "after load").
pub async fn rss(lab: &Lab, when: &str, report: &mut Report) {
    let idle = when == "idle";
    for (name, proc, goal) in [
        ("terrierd", &lab.server, if idle { "≤ 4 MiB (rathole 7.1)" } else { "" }),
        ("terrier agent", &lab.agent, if idle { "≤ 3 MiB (rathole 7.0)" } else { "" }),
    ] {
        let value = proc.settled_rss_kib().await.map(mib).map_err(|e| format!("n/a ({})", one_line(&e)));
        eprintln!("{name} RSS {when}: {}", value.as_deref().unwrap_or_else(|e| e));
        report.value(format!("{name} RSS, {when}"), value, goal);
        let anon = proc.anon_rss_kib().map(mib).map_err(|e| format!("n/a ({})", one_line(&e)));
        report.value(format!("{name} RSS, {when}: anonymous part (heap, stacks; the rest is mapped code)"), anon, "");
    }
}

/// A short load for the `memory` part alone: one wrk run per route and one
/// iperf3 run each way through the tunnel.
pub async fn short_load(lab: &Lab, s: &Settings) {
    for route in [Route::Vhost, Route::TcpPort] {
        let load = wrk::Load::new(lab.web(route), 32, Duration::from_secs(s.wrk_secs));
        if let Err(e) = load.run().await {
            eprintln!("load through {}: {e:#}", route.label());
        }
    }
    for reverse in [false, true] {
        let transfer =
            iperf::Transfer { addr: lab.bulk(Route::TcpPort), reverse, duration: Duration::from_secs(s.iperf_secs) };
        if let Err(e) = transfer.run().await {
            eprintln!("iperf3 through the tunnel: {e:#}");
        }
    }
}

/// terrierd's memory per idle device: a fresh terrierd per count, its
/// anonymous memory (RssAnon) before and after that many control sockets
/// are online.
pub async fn devices(bins: &Binaries, s: &Settings, report: &mut Report, commands: &mut Vec<String>) {
    let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(0);
    for &count in &s.devices {
        let figure = format!("terrierd RssAnon per idle device, {count} devices");
        let goal = if count >= 10_000 { "≤ 10 KiB" } else { "" };
        let needed = count as u64 + 256;
        if nofile < needed {
            let why = format!("n/a (open-file limit {nofile} < {needed}: raise `ulimit -Hn`)");
            report.value(figure, Err(why), goal);
            continue;
        }
        let value = match one_device_count(bins, count, commands).await {
            Ok((per_device_kib, note)) => {
                report.note(note);
                Ok(format!("{per_device_kib:.1} KiB"))
            }
            Err(e) => Err(format!("n/a ({})", one_line(&e))),
        };
        eprintln!("{figure}: {}", value.as_deref().unwrap_or_else(|e| e));
        report.value(figure, value, goal);
    }
}

async fn one_device_count(bins: &Binaries, count: usize, commands: &mut Vec<String>) -> anyhow::Result<(f64, String)> {
    let dir = tempfile::Builder::new().prefix("terrier-bench-devices-").tempdir()?;
    let (server, addr) = lab::start_terrierd(bins, dir.path(), commands).await?;
    // Devices cost anonymous memory (sessions, buffers); counted in
    // RssAnon, so code pages faulted in meanwhile do not count as theirs.
    server.settled_rss_kib().await?;
    let before = server.anon_rss_kib()?;
    let started = Instant::now();
    let deadline = Duration::from_secs(60 + count as u64 / 100);
    let devices = devices::connect(addr, count, deadline).await;
    let took = started.elapsed();
    server.settled_rss_kib().await?;
    let after = server.anon_rss_kib()?;
    if let Some(e) = &devices.first_error {
        eprintln!("devices: {e}");
    }
    if devices.online == 0 {
        anyhow::bail!("no device came online: {}", devices.first_error.as_deref().unwrap_or("?"));
    }
    let per_device = after.saturating_sub(before) as f64 / devices.online as f64;
    let mut note = format!(
        "{count} devices: {} online in {:.1} s ({:.0} handshakes/s); terrierd RssAnon {} → {}",
        devices.online,
        took.as_secs_f64(),
        devices.online as f64 / took.as_secs_f64(),
        mib(before),
        mib(after)
    );
    if let Some(e) = &devices.first_error {
        note.push_str(&format!("; first failure: {e}"));
    }
    drop(devices);
    server.stop().await;
    Ok((per_device, note))
}

/// Scale-out (issue 4): registrations/s into a 3-node cluster behind one
/// Redis, and the time until every device is back after the busiest node
/// is killed with SIGKILL.
pub async fn cluster(bins: &Binaries, s: &Settings, report: &mut Report, commands: &mut Vec<String>) {
    let count = s.cluster_devices;
    let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(0);
    let needed = count as u64 + 256;
    let registrations = format!("cluster: registrations/s, {count} devices via node A of 3");
    if nofile < needed {
        let why = format!("n/a (open-file limit {nofile} < {needed}: raise `ulimit -Hn`)");
        report.value(registrations, Err(why), "");
        return;
    }
    commands.push(format!(
        "cluster: {count} x ws://<node A>/v1/control?name=bench-N&http=1 (64 handshakes at a time, following 307 \
         up to 3 hops), then kill -9 of the busiest node; its devices reconnect to a random survivor after \
         U[0, 2 s]"
    ));
    let o = match cluster::run(bins, count, commands).await {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("cluster: {e:#}");
            report.value(registrations, Err(format!("n/a ({})", one_line(&e))), "");
            return;
        }
    };
    let spread =
        |per: &[(String, usize)]| per.iter().map(|(id, n)| format!("{id} {n}")).collect::<Vec<_>>().join(" / ");
    report.value(
        registrations,
        Ok(format!(
            "{:.0} /s ({} of {} in {:.2} s)",
            o.registered as f64 / o.register_time.as_secs_f64().max(1e-9),
            o.registered,
            o.count,
            o.register_time.as_secs_f64()
        )),
        "",
    );
    report.value("cluster: devices per node after registration".to_owned(), Ok(spread(&o.spread_before)), "");
    report.value(
        format!("cluster: all online again after kill -9 of {} ({} devices)", o.killed.0, o.killed.1),
        match o.recovery_time {
            Some(t) => Ok(format!("{:.2} s ({} of {} reconnected)", t.as_secs_f64(), o.recovered, o.killed.1)),
            None => Err(format!("n/a (not within 120 s: {} of {} reconnected)", o.recovered, o.killed.1)),
        },
        "",
    );
    report.value(
        "cluster: subdomain changed on reconnect".to_owned(),
        Ok(format!("{} of {}", o.mismatches, o.recovered)),
        "0",
    );
    report.value("cluster: devices per node after recovery".to_owned(), Ok(spread(&o.spread_after)), "");
    let mut note = format!(
        "cluster: {} redirects followed while registering, {} while reconnecting; {} devices on surviving nodes \
         lost their socket after the kill",
        o.register_hops, o.recovery_hops, o.collateral
    );
    note.push_str(&format!(
        "; failed attempts (retried after U[0, 2 s]): {} while registering, {} while reconnecting",
        o.register_retries, o.recovery_retries
    ));
    if let Some(e) = &o.first_retry {
        note.push_str(&format!("; first failed attempt: {e}"));
    }
    if let Some(e) = &o.first_error {
        note.push_str(&format!("; first device that gave up: {e}"));
    }
    report.note(note);
}

/// The traffic commands as run, for RESULTS.md.
pub fn commands(lab: &Lab, s: &Settings) -> Vec<String> {
    let mut lines = Vec::new();
    for route in [Route::Direct, Route::Vhost, Route::TcpPort] {
        let load = wrk::Load::new(lab.web(route), 32, Duration::from_secs(s.wrk_secs));
        lines.push(format!("wrk {}   # {}; also with -c1", shell_words(&load.args()), route.label()));
    }
    for route in [Route::Direct, Route::TcpPort] {
        let transfer =
            iperf::Transfer { addr: lab.bulk(route), reverse: false, duration: Duration::from_secs(s.iperf_secs) };
        lines.push(format!("iperf3 {}   # {}; also with -R", shell_words(&transfer.args()), route.label()));
    }
    lines.push(format!(
        "{} x (connect, GET / with Connection: close, read the answer, close)   # direct, HTTP vhost, TCP port",
        s.connections
    ));
    lines.push("devices: N x ws://<terrierd>/v1/control?name=bench-N&http=1 from one process, held idle".to_owned());
    lines
}

/// Joins arguments as a shell would need them (quotes around those with spaces).
fn shell_words(args: &[String]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| if a.contains(' ') { format!("'{a}'") } else { a.clone() }).collect();
    quoted.join(" ")
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").lines().next().unwrap_or_default().to_owned()
}
