//! Scale-out (issue 4): a real `redis-server` and three `terrierd` nodes
//! sharing it. Many simulated devices register, all aimed at node A and
//! following `307` redirects to the least loaded node; then the node holding
//! the most devices is killed with SIGKILL and its devices reconnect to the
//! survivors after a full-jitter delay, as the agent's backoff would.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::procs::{self, Binaries, Proc};

/// Node ids, in start order; node A is the one every device first asks.
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Public TCP port range of each node (devices are HTTP only, none is bound).
const NODE_TCP_PORTS: [&str; 3] = ["30000-30999", "31000-31999", "32000-32999"];

/// The config every node gets: fast cluster timings, and no per-address
/// handshake limit, since every simulated device connects from 127.0.0.1.
const CLUSTER_TOML: &str = "[cluster]\nheartbeat_interval = \"500ms\"\nnode_ttl = \"2s\"\nbalance_tolerance = 50\n\
    [limits]\ncontrol_handshakes_per_ip_per_minute = 0\n";

/// Control handshakes in flight at once while registering (as in `devices`).
const HANDSHAKES_AT_ONCE: usize = 64;

/// Longest one handshake (redirects included) may take until its `welcome`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);

/// Redirects followed in one attempt, as the agent does.
const MAX_HOPS: u32 = 3;

/// Reconnection delays are uniform in [0, this] (full jitter).
const RECONNECT_JITTER: Duration = Duration::from_secs(2);

/// Failed attempts in a row after which a simulated device gives up.
const MAX_ATTEMPTS: u32 = 30;

/// Longest each phase (registration, recovery) may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

/// Read buffer of each simulated device, in bytes: they receive only pings.
const DEVICE_READ_BUFFER_BYTES: usize = 4096;

/// What the cluster part measured.
#[derive(Debug)]
pub struct Outcome {
    /// Devices asked to register.
    pub count: usize,
    /// Devices welcomed in the registration phase.
    pub registered: usize,
    /// Time from the first handshake until the last `welcome`.
    pub register_time: Duration,
    /// Redirects followed during registration.
    pub register_hops: u64,
    /// Online devices per node id after registration.
    pub spread_before: Vec<(String, usize)>,
    /// The killed node and how many devices it held.
    pub killed: (String, usize),
    /// Time from the kill until every device was online again, or None on timeout.
    pub recovery_time: Option<Duration>,
    /// Devices of the killed node welcomed again by a survivor.
    pub recovered: usize,
    /// Welcomes after the kill whose subdomain differs from the first one.
    pub mismatches: usize,
    /// Devices on surviving nodes that lost their socket after the kill.
    pub collateral: usize,
    /// Redirects followed during recovery.
    pub recovery_hops: u64,
    /// Online devices per node id after recovery.
    pub spread_after: Vec<(String, usize)>,
    /// Failed attempts (retried after a jittered delay) while registering.
    pub register_retries: u64,
    /// Failed attempts while reconnecting after the kill.
    pub recovery_retries: u64,
    /// Why the first failed attempt failed.
    pub first_retry: Option<String>,
    /// Why the first device that gave up did so.
    pub first_error: Option<String>,
}

/// Starts redis-server and three nodes in a temporary folder, runs both
/// phases with `count` devices; everything is killed on return.
pub async fn run(bins: &Binaries, count: usize, commands: &mut Vec<String>) -> anyhow::Result<Outcome> {
    let redis_bin = procs::find_tool("redis-server")
        .context("redis-server not found: run `apt-get install redis-server` (Debian package)")?;
    let dir = tempfile::Builder::new().prefix("terrier-bench-cluster-").tempdir()?;
    let redis_port = procs::free_port()?;
    let redis_args = ["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        .map(str::to_owned);
    let mut cmd = Command::new(&redis_bin);
    cmd.args(&redis_args);
    commands.push(format!("{} --port {redis_port} --bind 127.0.0.1 --save '' --appendonly no", redis_bin.display()));
    let mut redis = Proc::spawn("redis-server", cmd, dir.path())?;
    redis.wait_for_port(SocketAddr::from(([127, 0, 0, 1], redis_port))).await?;

    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, CLUSTER_TOML)?;
    let store = format!("redis://127.0.0.1:{redis_port}/0");
    let mut nodes: Vec<(String, SocketAddr, Option<Proc>)> = Vec::new();
    for (id, ports) in NODES.iter().zip(NODE_TCP_PORTS) {
        let addr = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
        let data = dir.path().join(format!("data-{id}"));
        let args = [
            "--store",
            &store,
            "--node-id",
            id,
            "--listen",
            &addr.to_string(),
            "--domain",
            "localhost",
            "--tcp-bind",
            "127.0.0.1",
            "--tcp-ports",
            ports,
            "--log",
            "warn",
            "--config",
        ]
        .map(str::to_owned);
        let mut cmd = Command::new(&bins.terrierd);
        cmd.args(&args).arg(&config).arg("--data-dir").arg(&data);
        cmd.env_remove("TERRIERD_CONFIG").env_remove("TERRIERD_STORE");
        commands.push(format!(
            "{} {} <tmp>/cluster.toml --data-dir <tmp>/data-{id}   # cluster.toml: {}",
            bins.terrierd.display(),
            args.join(" "),
            CLUSTER_TOML.trim().replace('\n', "; ")
        ));
        let (proc, _) = Proc::spawn_until_line(&format!("terrierd-{id}"), cmd, dir.path(), |l| {
            l.starts_with("terrierd listening on http://")
        })
        .await?;
        nodes.push((id.to_string(), addr, Some(proc)));
    }
    // Let every node register and publish its load a few heartbeats long.
    sleep(Duration::from_millis(1500)).await;
    let outcome = measure(&mut nodes, count).await;
    for (_, _, proc) in &mut nodes {
        if let Some(proc) = proc.take() {
            proc.stop().await;
        }
    }
    redis.stop().await;
    outcome
}

/// What a simulated device tells the measuring loop.
#[derive(Debug)]
enum Event {
    /// Got its `welcome` from `node` after `hops` redirects.
    Welcome { index: usize, node: SocketAddr, subdomain: String, hops: u32 },
    /// Its control socket closed.
    Lost { index: usize },
    /// An attempt failed; it tries again after a jittered delay.
    Retry { error: String },
    /// Gave up.
    Failed { index: usize, error: String },
}

async fn measure(nodes: &mut [(String, SocketAddr, Option<Proc>)], count: usize) -> anyhow::Result<Outcome> {
    let node_a = nodes[0].1;
    let alive = Arc::new(Mutex::new(nodes.iter().map(|n| n.1).collect::<Vec<_>>()));
    let (events, mut inbox) = mpsc::unbounded_channel::<Event>();
    let gate = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    let device_deadline = Instant::now() + 2 * PHASE_TIMEOUT + Duration::from_secs(30);
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for index in 0..count {
        let (alive, events, gate) = (alive.clone(), events.clone(), gate.clone());
        tasks.spawn(device(index, node_a, alive, events, gate, device_deadline));
    }
    drop(events);

    // Phase 1: registration.
    let mut node_of: Vec<Option<SocketAddr>> = vec![None; count];
    let mut first_sub: Vec<Option<String>> = vec![None; count];
    let (mut registered, mut failed, mut register_hops) = (0, 0, 0u64);
    let mut first_error = None;
    let (mut register_retries, mut recovery_retries, mut first_retry) = (0u64, 0u64, None);
    let mut register_time = Duration::ZERO;
    let until = Instant::now() + PHASE_TIMEOUT;
    while registered + failed < count {
        match timeout_at(until, inbox.recv()).await {
            Ok(Some(Event::Welcome { index, node, subdomain, hops })) => {
                if first_sub[index].is_none() {
                    registered += 1;
                    first_sub[index] = Some(subdomain);
                }
                register_hops += u64::from(hops);
                node_of[index] = Some(node);
                register_time = started.elapsed();
            }
            Ok(Some(Event::Lost { index })) => node_of[index] = None,
            Ok(Some(Event::Retry { error })) => {
                register_retries += 1;
                first_retry.get_or_insert(error);
            }
            Ok(Some(Event::Failed { index, error })) => {
                failed += 1;
                first_error.get_or_insert(format!("bench-{index}: {error}"));
            }
            Ok(None) | Err(_) => break,
        }
    }
    if registered == 0 {
        bail!("no device registered: {}", first_error.as_deref().unwrap_or("timeout"));
    }
    let spread_before = spread(nodes, &node_of);
    eprintln!(
        "cluster: {registered}/{count} registered in {:.1} s, {register_hops} redirects; spread {spread_before:?}",
        register_time.as_secs_f64()
    );

    // Phase 2: kill -9 the busiest node.
    let victim = nodes
        .iter()
        .enumerate()
        .max_by_key(|(_, n)| node_of.iter().filter(|&&at| at == Some(n.1)).count())
        .map(|(i, _)| i)
        .context("no node")?;
    let victim_addr = nodes[victim].1;
    let mut affected: HashSet<usize> = (0..count).filter(|&i| node_of[i] == Some(victim_addr)).collect();
    let killed = (nodes[victim].0.clone(), affected.len());
    alive.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.retain(|&a| a != victim_addr);
    let proc = nodes[victim].2.take().context("victim already stopped")?;
    let kill_at = Instant::now();
    proc.stop().await; // SIGKILL
    let (mut recovered, mut mismatches, mut collateral, mut gave_up, mut recovery_hops) = (0, 0, 0, 0, 0u64);
    let mut recovery_time = None;
    let until = Instant::now() + PHASE_TIMEOUT;
    loop {
        let online = node_of.iter().filter(|n| n.is_some()).count();
        if affected.is_empty() && online + gave_up >= registered {
            recovery_time = Some(kill_at.elapsed());
            break;
        }
        match timeout_at(until, inbox.recv()).await {
            Ok(Some(Event::Welcome { index, node, subdomain, hops })) => {
                recovery_hops += u64::from(hops);
                if first_sub[index].as_deref() != Some(subdomain.as_str()) {
                    mismatches += 1;
                }
                if node != victim_addr && affected.remove(&index) {
                    recovered += 1;
                }
                node_of[index] = Some(node);
            }
            Ok(Some(Event::Lost { index })) => {
                if !affected.contains(&index) {
                    collateral += 1;
                }
                node_of[index] = None;
            }
            Ok(Some(Event::Retry { error })) => {
                recovery_retries += 1;
                first_retry.get_or_insert(error);
            }
            Ok(Some(Event::Failed { index, error })) => {
                first_error.get_or_insert(format!("bench-{index}: {error}"));
                affected.remove(&index);
                gave_up += 1;
            }
            Ok(None) | Err(_) => break,
        }
    }
    let spread_after = spread(nodes, &node_of);
    eprintln!(
        "cluster: killed {} ({} devices); back online after {:?}; {recovered} recovered, {mismatches} subdomain \
         mismatches, {collateral} collateral losses; spread {spread_after:?}",
        killed.0, killed.1, recovery_time
    );
    drop(tasks);
    Ok(Outcome {
        count,
        registered,
        register_time,
        register_hops,
        spread_before,
        killed,
        recovery_time,
        recovered,
        mismatches,
        collateral,
        recovery_hops,
        spread_after,
        register_retries,
        recovery_retries,
        first_retry,
        first_error,
    })
}

/// Online devices per node id.
fn spread(nodes: &[(String, SocketAddr, Option<Proc>)], node_of: &[Option<SocketAddr>]) -> Vec<(String, usize)> {
    let mut per: HashMap<SocketAddr, usize> = HashMap::new();
    for addr in node_of.iter().flatten() {
        *per.entry(*addr).or_default() += 1;
    }
    nodes.iter().map(|(id, addr, _)| (id.clone(), per.get(addr).copied().unwrap_or(0))).collect()
}

/// One simulated device: registers at `home` (following redirects), holds
/// its socket, and after each loss reconnects to a random node of `alive`
/// after a full-jitter delay; gives up after [`MAX_ATTEMPTS`] failures in a
/// row or at `deadline`.
async fn device(
    index: usize,
    home: SocketAddr,
    alive: Arc<Mutex<Vec<SocketAddr>>>,
    events: mpsc::UnboundedSender<Event>,
    gate: Arc<Semaphore>,
    deadline: Instant,
) {
    let mut rng = Rng::new(index as u64);
    let mut registered = false;
    let mut failures = 0;
    loop {
        let target = if registered {
            let alive = alive.lock().map(|a| a.clone()).unwrap_or_default();
            if alive.is_empty() {
                let _ = events.send(Event::Failed { index, error: "no node alive".to_owned() });
                return;
            }
            alive[rng.below(alive.len() as u64) as usize]
        } else {
            home
        };
        let permit = if registered { None } else { gate.clone().acquire_owned().await.ok() };
        let attempt = timeout(WELCOME_TIMEOUT, open(target, index)).await;
        drop(permit);
        let error = match attempt {
            Ok(Ok(session)) => {
                registered = true;
                failures = 0;
                let welcome =
                    Event::Welcome { index, node: session.node, subdomain: session.subdomain, hops: session.hops };
                if events.send(welcome).is_err() {
                    return;
                }
                hold(session.socket).await;
                if events.send(Event::Lost { index }).is_err() {
                    return;
                }
                None
            }
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(_) => Some(format!("no welcome within {WELCOME_TIMEOUT:?}")),
        };
        if let Some(error) = error {
            failures += 1;
            if failures >= MAX_ATTEMPTS || Instant::now() >= deadline {
                let _ = events.send(Event::Failed { index, error });
                return;
            }
            if events.send(Event::Retry { error }).is_err() {
                return;
            }
        }
        if Instant::now() >= deadline {
            let _ = events.send(Event::Failed { index, error: "bench deadline".to_owned() });
            return;
        }
        let delay = RECONNECT_JITTER.mul_f64(rng.unit());
        sleep(delay).await;
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An open control socket and what its `welcome` said.
struct Session {
    socket: Socket,
    node: SocketAddr,
    subdomain: String,
    hops: u32,
}

/// Handshakes at `server`, following up to [`MAX_HOPS`] `307` redirects,
/// and waits for the `welcome`.
async fn open(server: SocketAddr, index: usize) -> anyhow::Result<Session> {
    let mut at = server;
    let mut hops = 0;
    loop {
        let mut url = format!("ws://{at}/v1/control?name=bench-{index}&http=1&agent=terrier-bench");
        if hops > 0 {
            url.push_str(&format!("&hops={hops}"));
        }
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("terrier.v1"));
        let config = WebSocketConfig::default().read_buffer_size(DEVICE_READ_BUFFER_BYTES).write_buffer_size(0);
        match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
            Ok((mut socket, _)) => {
                let subdomain = match socket.next().await.context("closed before welcome")?? {
                    Message::Text(text) => {
                        let value: serde_json::Value = serde_json::from_str(&text).context("welcome is not JSON")?;
                        value["welcome"]["subdomain"]
                            .as_str()
                            .with_context(|| format!("expected welcome with subdomain, got {text}"))?
                            .to_owned()
                    }
                    other => bail!("expected welcome, got {other:?}"),
                };
                return Ok(Session { socket, node: at, subdomain, hops });
            }
            Err(WsError::Http(response)) if response.status() == StatusCode::TEMPORARY_REDIRECT => {
                if hops >= MAX_HOPS {
                    bail!("more than {MAX_HOPS} redirects");
                }
                let location =
                    response.headers().get("Location").and_then(|v| v.to_str().ok()).context("307 without Location")?;
                at = base_addr(location).with_context(|| format!("Location {location:?} is not http://ip:port"))?;
                hops += 1;
            }
            Err(WsError::Http(response)) => {
                let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                bail!("{} at {at}: {}", response.status(), body.trim());
            }
            Err(e) => return Err(e).with_context(|| format!("handshake at {at} after {hops} redirects from {server}")),
        }
    }
}

/// The address of a base URL such as `http://127.0.0.1:8081` (or `…/`).
fn base_addr(location: &str) -> Option<SocketAddr> {
    let rest = location.strip_prefix("http://").or_else(|| location.strip_prefix("ws://"))?;
    rest.split('/').next()?.parse().ok()
}

/// Reads (and so answers pings) until the socket ends.
async fn hold(mut socket: Socket) {
    while let Some(Ok(_)) = socket.next().await {}
}

/// A small xorshift generator for the jitter (no dependency needed).
struct Rng(u64);

impl Rng {
    fn new(index: u64) -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        // splitmix64 of the index and the clock, never 0.
        let mut z = nanos ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_base_urls_parse() {
        assert_eq!(base_addr("http://127.0.0.1:8081"), Some(SocketAddr::from(([127, 0, 0, 1], 8081))));
        assert_eq!(base_addr("http://127.0.0.1:8081/"), Some(SocketAddr::from(([127, 0, 0, 1], 8081))));
        assert_eq!(base_addr("https://x"), None);
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut rng = Rng::new(7);
        for _ in 0..1000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(rng.below(2) < 2);
        }
    }
}
