//! `terrier-bench`: measures terrier against the same traffic without a
//! tunnel, on loopback, and prints a markdown table of ratios (`all` also
//! writes it to `bench/RESULTS.md`). See bench/README.md.
//!
//! Modules: [`procs`] starts and stops programs, [`lab`] sets up nginx,
//! iperf3, terrierd and the agent, [`parts`] runs each measurement with
//! [`wrk`], [`iperf`], [`connect`], [`devices`] and [`cluster`], [`agent`]
//! measures the size-tuned agent itself, [`stats`] and
//! [`report`] turn samples into the table. The reliability runs of issue 9,
//! [`storm`] and [`soak`], drive simulated serving devices ([`sim`]) and
//! visitors ([`visit`]).
#![forbid(unsafe_code)]

mod agent;
mod cluster;
mod connect;
mod devices;
mod floor;
mod iperf;
mod lab;
mod parts;
mod procs;
mod report;
mod rivals;
mod sim;
mod soak;
mod stats;
mod storm;
mod tls;
mod visit;
mod wrk;

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::time::Instant;

use lab::{Lab, Route};
use parts::Settings;
use procs::Binaries;
use report::{Report, RunInfo};

/// Benchmarks terrier's tunnel against direct traffic (nginx, iperf3) on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(about, long_about = None)]
struct Cli {
    /// Which part to run.
    #[command(subcommand)]
    part: Part,
    /// Use the release binaries already built instead of running cargo build first.
    #[arg(long, global = true)]
    no_build: bool,
    /// `storm` and `rivals`: write their table into bench/RESULTS.md; `soak`: into docs/RELIABILITY.md.
    #[arg(long, global = true)]
    record: bool,
    /// Run lengths and counts.
    #[command(flatten)]
    settings: Settings,
}

/// The parts of the benchmark.
#[derive(Debug, Clone, Subcommand)]
enum Part {
    /// Everything below, then writes bench/RESULTS.md.
    All,
    /// wrk through the HTTP vhost (Host: <sub>.localhost) against direct.
    Http,
    /// wrk through the device's public TCP port against direct.
    Tcp,
    /// iperf3 both ways through the TCP port against direct.
    Bulk,
    /// Sequential new connections with one request each.
    Connect,
    /// RSS of terrierd and the agent, idle and after a short load.
    Memory,
    /// terrierd RSS per idle device with many simulated devices online.
    Devices,
    /// Registrations/s into a 3-node cluster (redis-server), and recovery after kill -9 of one node.
    Cluster,
    /// The size-tuned agent (--profile release-agent): stripped size, idle RSS, RSS with 100 streams, reconnect time.
    Agent,
    /// terrier beside rathole and bore (bench/install-rivals.sh builds them): the same traffic, one run (not in `all`).
    Rivals {
        /// Then HTTPS visitors and a wss:// agent beside rathole's TLS transport, against direct HTTPS.
        #[arg(long)]
        tls: bool,
        /// Only the TLS figures (implies --tls).
        #[arg(long)]
        only_tls: bool,
    },
    /// 10,000 serving devices, 1,000 concurrent visitors through them, then all dropped at once and back (not in `all`).
    Storm,
    /// Churn for --minutes, sampling terrierd's RSS, open FDs and tokio tasks (not in `all`).
    Soak,
    /// One hop of `rivals`' relay floor: relays each --to target from a new 127.0.0.1 port (started by the bench itself).
    #[command(hide = true)]
    Relay {
        /// Where to relay to; the ports it listens on are printed in this order.
        #[arg(long, required = true)]
        to: Vec<std::net::SocketAddr>,
    },
    /// Server hop of `rivals`' pooled relay floor: a public and a pool port per service (started by the bench itself).
    #[command(hide = true)]
    PoolRelayServer {
        /// How many services; it prints their public ports, then their pool ports.
        #[arg(long)]
        services: usize,
    },
    /// Agent hop of `rivals`' pooled relay floor: keeps --size connections open to each --pool port (started by the bench itself).
    #[command(hide = true)]
    PoolRelayClient {
        /// A server hop's pool port; the n-th --pool relays to the n-th --to.
        #[arg(long, required = true)]
        pool: Vec<std::net::SocketAddr>,
        /// Where the visitors of the n-th --pool go.
        #[arg(long, required = true)]
        to: Vec<std::net::SocketAddr>,
        /// Idle connections kept open per pool port.
        #[arg(long)]
        size: usize,
    },
}

/// Runs `part` if it is a relay hop of a floor (a process the bench starts
/// itself), until it is killed; `None` for every other part.
async fn relay_hop(part: &Part) -> Option<anyhow::Result<()>> {
    Some(match part {
        Part::Relay { to } => floor::serve(to).await,
        Part::PoolRelayServer { services } => floor::serve_pool_server(*services).await,
        Part::PoolRelayClient { pool, to, size } if pool.len() == to.len() => {
            let pairs: Vec<_> = pool.iter().copied().zip(to.iter().copied()).collect();
            floor::serve_pool_client(&pairs, *size).await
        }
        Part::PoolRelayClient { .. } => Err(anyhow::anyhow!("give as many --to as --pool")),
        _ => return None,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(outcome) = relay_hop(&cli.part).await {
        return match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("terrier-bench relay: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let started = Instant::now();
    // Leaving `run` (error or Ctrl-C) drops every child process, which kills it.
    let outcome = tokio::select! {
        outcome = run(&cli, started) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(()) => {
            println!("total run time: {:.0} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("terrier-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli, started: Instant) -> anyhow::Result<()> {
    let mut run = RunInfo { load_at_start: report::load_average(), ..RunInfo::default() };
    let standalone = matches!(cli.part, Part::Devices | Part::Cluster | Part::Agent | Part::Storm | Part::Soak);
    if !standalone {
        procs::check_tools()?;
    }
    let nofile = procs::raise_nofile_limit();
    eprintln!("open-file limit raised to {nofile} (children inherit it)");
    let bins = if matches!(cli.part, Part::Agent) {
        // Only the agent is measured: any terrierd build serves it.
        Binaries::locate().or_else(|_| agent::debug_binaries())?
    } else if cli.no_build {
        Binaries::locate()?
    } else {
        let bins = Binaries::build().await?;
        run.build = started.elapsed();
        bins
    };
    let s = &cli.settings;
    let root = procs::workspace_root();
    match cli.part {
        Part::Storm => {
            let out = cli.record.then(|| root.join("bench/RESULTS.md"));
            return storm::run(&bins, s, out.as_deref(), &mut run.commands).await;
        }
        Part::Soak => {
            let out = cli.record.then(|| root.join("docs/RELIABILITY.md"));
            return soak::run(&bins, s, out.as_deref(), &mut run.commands).await;
        }
        _ => {}
    }
    let mut report = Report::default();
    if !standalone {
        let mut lab = Lab::start(&bins).await?;
        eprintln!(
            "lab up: nginx {}, iperf3 {}, terrierd {}, device {}",
            lab.nginx_addr, lab.iperf_addr, lab.server_addr, lab.info.host
        );
        match cli.part {
            Part::All => {
                parts::rss(&lab, "idle", &mut report).await;
                parts::web(&lab, s, &[Route::Vhost, Route::TcpPort], &mut report).await;
                parts::bulk(&lab, s, &mut report).await;
                parts::new_connections(&mut lab, s, &mut report).await;
                parts::rss(&lab, "after load", &mut report).await;
            }
            Part::Http => parts::web(&lab, s, &[Route::Vhost], &mut report).await,
            Part::Tcp => parts::web(&lab, s, &[Route::TcpPort], &mut report).await,
            Part::Bulk => parts::bulk(&lab, s, &mut report).await,
            Part::Connect => parts::new_connections(&mut lab, s, &mut report).await,
            Part::Rivals { tls, only_tls } => {
                if !only_tls {
                    parts::rivals(&mut lab, s, &mut report, &mut run.commands).await;
                }
                if tls || only_tls {
                    tls::run(&bins, lab.iperf_addr, s, &mut report, &mut run.commands).await;
                }
            }
            Part::Memory => {
                parts::rss(&lab, "idle", &mut report).await;
                parts::short_load(&lab, s).await;
                parts::rss(&lab, "after load", &mut report).await;
            }
            _ => {}
        }
        run.commands.extend(lab.commands.iter().cloned());
        run.commands.extend(parts::commands(&lab, s));
    }
    if matches!(cli.part, Part::All | Part::Devices) {
        parts::devices(&bins, s, &mut report, &mut run.commands).await;
    }
    if matches!(cli.part, Part::All | Part::Cluster) {
        parts::cluster(&bins, s, &mut report, &mut run.commands).await;
    }
    if matches!(cli.part, Part::All | Part::Agent) {
        match agent::size_tuned_agent(cli.no_build).await {
            Ok(bin) => agent::run(&bins, &bin, &mut report, &mut run.commands).await,
            Err(e) => report.note(format!("agent part skipped: {e:#}")),
        }
    }
    println!("\n{}", report.markdown());
    if matches!(cli.part, Part::Rivals { .. }) && cli.record {
        let path = root.join("bench/RESULTS.md");
        report::write_rivals(&path, &report, &run)?;
        println!("written to {}", path.display());
    }
    if matches!(cli.part, Part::All) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("RESULTS.md");
        run.total = started.elapsed();
        report::write_results(&path, &report, &run)?;
        println!("written to {}", path.display());
    }
    Ok(())
}
