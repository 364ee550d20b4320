//! The TLS figures of `rivals` (`--tls`, issue 24): HTTPS visitors and a
//! `wss://` agent beside rathole over its TLS transport, against direct
//! HTTPS to nginx, interleaved in one run like the plain figures.
//!
//! What each route encrypts (every hop is on 127.0.0.1):
//!
//! - *direct HTTPS*: wrk ↔ nginx, one TLS session;
//! - *terrier HTTPS vhost*: wrk ↔ terrierd's TLS listener (routed by
//!   `Host`), terrierd ↔ agent over `wss://`; the agent speaks plain HTTP
//!   to nginx, as a device's own service would;
//! - *terrier TCP port* and *rathole-tls*: the visitor's TLS session runs
//!   to nginx's HTTPS port, carried inside the tunnel's own TLS (the
//!   agent's `wss://`, rathole's TLS transport): TLS twice on the tunnel hop;
//! - *relay floor*: HTTPS to nginx through the two plain relays
//!   ([`crate::floor`]): the visitor's TLS only, no transport encryption.
//!
//! The certificates come from the `openssl` command line (so the bench
//! needs no TLS crate): a CA, and a server certificate for `localhost`,
//! `*.localhost` and 127.0.0.1 that nginx, terrierd and rathole's server
//! all present. The agent and rathole's client trust that CA only; wrk
//! checks no certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::lab::{self, AgentInfo, Endpoint, Extra, Nginx, Services};
use crate::parts::{self, Settings};
use crate::procs::{self, Binaries, Proc};
use crate::report::{Report, Unit};
use crate::rivals::{self, Rival, Targets};
use crate::wrk;

/// Password of the PKCS#12 bundle rathole's server reads.
pub const P12_PASSWORD: &str = "bench";

/// The file every bulk download fetches, in nginx's folder.
const BIG_FILE: &str = "big.bin";

/// Its size: large enough that a download is mostly body, not heads and
/// round trips (64 MiB takes ~0.1-0.5 s here).
const BIG_BYTES: u64 = 64 << 20;

/// Public TCP ports of the TLS terrierd, apart from the lab's terrierd's.
const TCP_PORTS: &str = "30000-30999";

/// The goal of issue 24 for terrier's HTTPS vhost.
const GOAL: &str = "≥ rathole-tls";

/// The PEM and PKCS#12 files of one run.
#[derive(Debug)]
pub struct Certs {
    /// The CA certificate the agent and rathole's client trust.
    pub ca: PathBuf,
    /// The server certificate (`localhost`, `*.localhost`, 127.0.0.1).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// Certificate and key for rathole's server, sealed with [`P12_PASSWORD`].
    pub p12: PathBuf,
}

impl Certs {
    /// Makes a CA and a server certificate in `dir` with `openssl`. Keys
    /// are ECDSA P-256: every TLS stack here takes them, and handshakes
    /// stay cheap beside the traffic.
    pub async fn make(dir: &Path, commands: &mut Vec<String>) -> anyhow::Result<Self> {
        let at = |name: &str| dir.join(name).display().to_string();
        let (ca_key, ca, key, csr, cert, p12, ext) = (
            at("ca.key"),
            at("ca.pem"),
            at("server.key"),
            at("server.csr"),
            at("server.pem"),
            at("server.p12"),
            at("server.ext"),
        );
        std::fs::write(
            &ext,
            "subjectAltName = DNS:localhost, DNS:*.localhost, IP:127.0.0.1\n\
             basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n",
        )?;
        const NEW_KEY: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let pass = format!("pass:{P12_PASSWORD}");
        let steps: [Vec<&str>; 4] = [
            [
                &["req", "-x509", "-days", "2", "-subj", "/CN=terrier-bench CA"],
                NEW_KEY,
                &["-keyout", &ca_key, "-out", &ca],
            ]
            .concat()
            .into_iter()
            .chain(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .collect(),
            [&["req", "-new", "-subj", "/CN=localhost"], NEW_KEY, &["-keyout", &key, "-out", &csr]].concat(),
            vec!["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-set_serial", "1", "-days", "2"]
                .into_iter()
                .chain(["-extfile", &ext, "-out", &cert])
                .collect(),
            vec!["pkcs12", "-export", "-in", &cert, "-inkey", &key, "-out", &p12, "-passout", &pass],
        ];
        let tmp = dir.display().to_string();
        for step in steps {
            let args: Vec<String> = step.iter().map(|w| (*w).to_owned()).collect();
            commands.push(format!("openssl {}", args.join(" ").replace(&tmp, "<tmp>")));
            procs::run_tool("openssl", &args, Duration::from_secs(30)).await?;
        }
        Ok(Self { ca: ca.into(), cert: cert.into(), key: key.into(), p12: p12.into() })
    }
}

/// nginx over HTTP and HTTPS, a terrierd with a TLS listener and an agent
/// dialling it over `wss://`. Field order is drop order: processes before
/// their folder.
#[derive(Debug)]
struct TlsLab {
    agent: Proc,
    server: Proc,
    nginx: Nginx,
    /// nginx's HTTPS port.
    nginx_https: SocketAddr,
    /// terrierd's TLS listener.
    server_tls: SocketAddr,
    /// What the agent announced.
    info: AgentInfo,
    certs: Certs,
    _dir: TempDir,
}

impl TlsLab {
    /// Starts everything; `iperf` is the lab's iperf3 (the agent's `iperf` service).
    async fn start(bins: &Binaries, iperf: SocketAddr, commands: &mut Vec<String>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("terrier-bench-tls-").tempdir()?;
        let certs = Certs::make(dir.path(), commands).await?;
        let nginx = lab::start_nginx(dir.path(), Some((&certs.cert, &certs.key)), commands).await?;
        let nginx_https = nginx.https.ok_or_else(|| anyhow::anyhow!("nginx has no HTTPS port"))?;
        write_big_file(&nginx.www.join(BIG_FILE))?;
        let server_tls = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
        let args = [
            "--tls-cert".to_owned(),
            certs.cert.display().to_string(),
            "--tls-key".to_owned(),
            certs.key.display().to_string(),
            "--tls-listen".to_owned(),
            server_tls.to_string(),
        ];
        let extra = Extra { tcp_ports: Some(TCP_PORTS), args: &args, ..Extra::default() };
        let (mut server, _) = lab::start_terrierd_with(bins, dir.path(), &extra, commands).await?;
        server.wait_for_port(server_tls).await?;
        // The agent's HTTP service is nginx's plain port (a device's own
        // service); its TCP service `nginx` is the HTTPS port, so visitors
        // of the TCP port speak TLS end to end, as through rathole-tls.
        let services = Services {
            server: format!("wss://{server_tls}"),
            ca: Some(certs.ca.clone()),
            http: nginx.addr,
            nginx: nginx_https,
            iperf,
        };
        let (agent, info) = lab::start_agent(bins, &services, "bench-tls", None, dir.path(), commands).await?;
        Ok(Self { agent, server, nginx, nginx_https, server_tls, info, certs, _dir: dir })
    }

    /// The routes measured: direct HTTPS first, terrier's two, then each rival.
    fn routes(&self, rivals: &[Rival]) -> Vec<(String, Endpoint)> {
        let https = |addr, host| Endpoint { addr, host, tls: true };
        let tcp_port = SocketAddr::from(([127, 0, 0, 1], self.info.nginx_port));
        let mut routes = vec![
            ("direct HTTPS".to_owned(), https(self.nginx_https, None)),
            ("terrier HTTPS vhost, wss agent".to_owned(), https(self.server_tls, Some(self.info.host.clone()))),
            ("terrier TCP port (HTTPS to nginx), wss agent".to_owned(), https(tcp_port, None)),
        ];
        routes.extend(rivals.iter().map(|r| (format!("{} (HTTPS to nginx)", r.name), r.endpoint())));
        routes
    }

    async fn stop(self) {
        self.agent.stop().await;
        self.server.stop().await;
        self.nginx.proc.stop().await;
    }
}

/// A [`BIG_BYTES`] file of zeros (sparse: written in no time; TLS
/// encrypts it like any other bytes, and nothing compresses it).
fn write_big_file(path: &Path) -> anyhow::Result<()> {
    std::fs::File::create(path)?.set_len(BIG_BYTES)?;
    Ok(())
}

/// Starts rathole over TLS, if installed, and the relay floor, both to
/// nginx's HTTPS port; what did not start is in the second list.
async fn start_rivals(tls: &TlsLab, iperf: SocketAddr, commands: &mut Vec<String>) -> (Vec<Rival>, Vec<String>) {
    let (mut running, mut missing) = (Vec::new(), Vec::new());
    let targets = Targets { web: tls.nginx_https, bulk: iperf, tls: true };
    match rivals::find(rivals::RATHOLE_TLS) {
        None => missing.push(format!("{}: not installed (run bench/install-rivals.sh)", rivals::RATHOLE_TLS)),
        Some(bin) => match rivals::start_rathole(&bin, targets, Some(&tls.certs), commands).await {
            Ok(rival) => running.push(rival),
            Err(e) => missing.push(format!("{}: did not start: {}", rivals::RATHOLE_TLS, one_line(&e))),
        },
    }
    match rivals::start_floor(targets, commands).await {
        Ok(floor) => running.push(floor),
        Err(e) => missing.push(format!("{}: did not start: {}", rivals::FLOOR, one_line(&e))),
    }
    (running, missing)
}

/// The TLS figures: wrk -c32 req/s and p99 on the 100-byte page, then the
/// big file downloaded again and again on one connection, each route in
/// every repetition and as a ratio to direct HTTPS.
pub async fn run(bins: &Binaries, iperf: SocketAddr, s: &Settings, report: &mut Report, commands: &mut Vec<String>) {
    let tls = match TlsLab::start(bins, iperf, commands).await {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("TLS part: {e:#}");
            return report.note(format!("TLS part skipped: {}", one_line(&e)));
        }
    };
    eprintln!("TLS lab up: nginx https {}, terrierd tls {}, device {}", tls.nginx_https, tls.server_tls, tls.info.host);
    let (running, missing) = start_rivals(&tls, iperf, commands).await;
    for why in missing {
        eprintln!("{why}");
        report.note(why);
    }
    let routes = tls.routes(&running);
    web(&routes, s, report).await;
    bulk(&routes, s, report).await;
    commands.push(format!(
        "wrk -t1 -c1 -d{}s --latency --timeout 5s https://<route>/{BIG_FILE}   # {} MiB, over and over; Transfer/sec",
        s.wrk_secs,
        BIG_BYTES >> 20
    ));
    for rival in running {
        rival.stop().await;
    }
    tls.stop().await;
}

/// wrk -c32 on the page through every route, interleaved.
async fn web(routes: &[(String, Endpoint)], s: &Settings, report: &mut Report) {
    let (mut rps, mut p99): (Vec<Vec<f64>>, Vec<Vec<f64>>) =
        (vec![Vec::new(); routes.len()], vec![Vec::new(); routes.len()]);
    for rep in 1..=s.reps {
        for (i, (label, endpoint)) in routes.iter().enumerate() {
            let what = format!("wrk -c32 {label} rep {rep}/{}", s.reps);
            let load = wrk::Load::new(endpoint.clone(), 32, Duration::from_secs(s.wrk_secs));
            let r = parts::wrk_checked(&load, &what, report).await;
            if let Some(r) = &r {
                eprintln!("{what}: {:.0} req/s, p99 {:.3} ms", r.requests_per_sec, r.p99_ms);
            }
            rps[i].push(r.as_ref().map_or(f64::NAN, |r| r.requests_per_sec));
            p99[i].push(r.as_ref().map_or(f64::NAN, |r| r.p99_ms));
        }
    }
    for (i, (label, _)) in routes.iter().enumerate().skip(1) {
        let goal = if label.contains("vhost") { GOAL } else { "" };
        report.ratio(format!("HTTPS req/s, -c32, {label}"), Unit::ReqPerSec, goal, &rps[0], &rps[i]);
        report.ratio(format!("HTTPS p99 latency, -c32, {label}"), Unit::Millis, "", &p99[0], &p99[i]);
    }
}

/// The big file, device → visitor, on one keep-alive connection for
/// `wrk_secs` through every route, interleaved: Gbit/s read by wrk.
/// Uploads are not measured: wrk sends no bodies this large.
async fn bulk(routes: &[(String, Endpoint)], s: &Settings, report: &mut Report) {
    let mut gbits: Vec<Vec<f64>> = vec![Vec::new(); routes.len()];
    for rep in 1..=s.reps {
        for ((label, endpoint), samples) in routes.iter().zip(&mut gbits) {
            let what = format!("download {label} rep {rep}/{}", s.reps);
            let load =
                wrk::Load { path: "/big.bin", ..wrk::Load::new(endpoint.clone(), 1, Duration::from_secs(s.wrk_secs)) };
            let r = parts::wrk_checked(&load, &what, report).await;
            let value = r.map_or(f64::NAN, |r| r.bytes_per_sec * 8.0 / 1e9);
            eprintln!("{what}: {value:.2} Gbit/s");
            samples.push(value);
        }
    }
    for (i, (label, _)) in routes.iter().enumerate().skip(1) {
        let goal = if label.contains("vhost") { GOAL } else { "" };
        let figure = format!("HTTPS bulk, {} MiB file device → visitor, {label}", BIG_BYTES >> 20);
        report.ratio(figure, Unit::Gbits, goal, &gbits[0], &gbits[i]);
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").lines().next().unwrap_or_default().to_owned()
}
