//! Starting and stopping the programs a benchmark drives: the release
//! binaries `terrierd` and `terrier`, nginx and iperf3 as targets, and the
//! short-lived clients (wrk, iperf3 -c). Every child is started with
//! `kill_on_drop`, so an error or Ctrl-C anywhere leaves nothing running.
//! [`crate::lab`] puts them together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

/// How long a started program may take to show it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How often readiness and memory are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Debian programs the benchmark drives, with the package that has each.
const TOOLS: [(&str, &str); 3] = [("nginx", "nginx"), ("wrk", "wrk"), ("iperf3", "iperf3")];

/// Fails with the `apt-get install` line when nginx, wrk or iperf3 is missing.
pub fn check_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = TOOLS.iter().filter(|(bin, _)| find_tool(bin).is_none()).map(|(_, pkg)| *pkg).collect();
    if !missing.is_empty() {
        bail!(
            "missing {}: the benchmark installs nothing itself; run `apt-get install {}` (Debian packages)",
            missing.join(", "),
            missing.join(" ")
        );
    }
    Ok(())
}

/// Finds a program on `PATH`, or in /usr/sbin and /sbin (nginx lives there).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The release binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `terrierd`, the server.
    pub terrierd: PathBuf,
    /// `terrier`, the agent.
    pub terrier: PathBuf,
}

impl Binaries {
    /// Runs `cargo build --release` for both programs (what a user who
    /// builds or `cargo install`s terrier gets), then [`Binaries::locate`].
    pub async fn build() -> anyhow::Result<Self> {
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--bins", "-p", "terrier-server", "-p", "terrier-agent"])
            .current_dir(workspace_root())
            .status()
            .await
            .context("running cargo build --release")?;
        if !status.success() {
            bail!("cargo build --release failed ({status})");
        }
        Self::locate()
    }

    /// Finds already built binaries in `target/release` (or under
    /// `$CARGO_TARGET_DIR`), where `cargo build --release` puts them.
    pub fn locate() -> anyhow::Result<Self> {
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or(workspace_root().join("target"));
        let release = target.join("release");
        let bins = Self { terrierd: release.join("terrierd"), terrier: release.join("terrier") };
        for bin in [&bins.terrierd, &bins.terrier] {
            if !bin.is_file() {
                bail!("{} not found: build it with cargo build --release", bin.display());
            }
        }
        Ok(bins)
    }

    /// Whether this agent has the data-socket pool (`--pool N` in its help).
    pub async fn agent_has_pool(&self) -> bool {
        let help = Command::new(&self.terrier).arg("--help").stdin(Stdio::null()).output().await;
        help.map(|out| String::from_utf8_lossy(&out.stdout).contains("--pool")).unwrap_or(false)
    }
}

/// The workspace folder (this crate's parent).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A long-running child process, killed when dropped.
#[derive(Debug)]
pub struct Proc {
    /// Name used in messages ("terrierd", "nginx").
    name: String,
    /// The child; `kill_on_drop` is set.
    child: Child,
    /// Process id, for /proc/PID/status.
    pid: u32,
    /// File that collects the child's stdout and stderr.
    log: PathBuf,
    /// Copies stdout to `log` after the ready line was read; ends at the child's exit.
    drain: Option<JoinHandle<()>>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let file = open_log(&log)?;
        cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).kill_on_drop(true);
        Self::from_command(name, cmd, log)
    }

    /// Starts `cmd` and reads its stdout until a line satisfies `ready`;
    /// returns that line. The rest of stdout goes to the log file.
    pub async fn spawn_until_line(
        name: &str,
        mut cmd: Command,
        log_dir: &Path,
        ready: impl Fn(&str) -> bool,
    ) -> anyhow::Result<(Self, String)> {
        let log = log_dir.join(format!("{name}.log"));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(open_log(&log)?).kill_on_drop(true);
        let mut proc = Self::from_command(name, cmd, log)?;
        let stdout = proc.child.stdout.take().context("stdout was not piped")?;
        let mut lines = BufReader::new(stdout);
        let found = timeout(READY_TIMEOUT, async {
            let mut line = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                if ready(line.trim()) {
                    return Ok(Some(line.trim().to_owned()));
                }
            }
        })
        .await;
        let line = match found {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => bail!("{name} exited before it was ready:\n{}", proc.log_tail()),
            Ok(Err(e)) => bail!("reading {name}'s output: {e}"),
            Err(_) => bail!("{name} not ready after {READY_TIMEOUT:?}:\n{}", proc.log_tail()),
        };
        let mut file = tokio::fs::File::from_std(open_log(&proc.log)?);
        proc.drain = Some(tokio::spawn(async move {
            let _ = tokio::io::copy_buf(&mut lines, &mut file).await;
        }));
        Ok((proc, line))
    }

    fn from_command(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id().with_context(|| format!("{name} has no pid"))?;
        Ok(Self { name: name.to_owned(), child, pid, log, drain: None })
    }

    /// Waits until `addr` accepts TCP connections; fails early if the child exits.
    pub async fn wait_for_port(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let until = Instant::now() + READY_TIMEOUT;
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) before listening on {addr}:\n{}", self.name, self.log_tail());
            }
            if Instant::now() >= until {
                bail!("{} not listening on {addr} after {READY_TIMEOUT:?}:\n{}", self.name, self.log_tail());
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// Resident memory now, in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmRSS")
    }

    /// Resident anonymous memory now (heap, stacks: `RssAnon`), in KiB; the
    /// rest of the RSS is code and data mapped from the binary and libraries.
    pub fn anon_rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("RssAnon")
    }

    /// Proportional set size now (`Pss` of /proc/PID/smaps_rollup): pages
    /// shared with other processes (a library, the same binary) count in
    /// part, so it is what the process costs the machine, in KiB.
    pub fn pss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/smaps_rollup", self.pid);
        let rollup = std::fs::read_to_string(&path).with_context(|| format!("reading {path} ({})", self.name))?;
        rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no Pss in {path}"))
    }

    /// A `kB` field of /proc/PID/status.
    fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path} ({})", self.name))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in {path}"))
    }

    /// Open file descriptors now (entries of /proc/PID/fd).
    pub fn open_fds(&self) -> anyhow::Result<usize> {
        let path = format!("/proc/{}/fd", self.pid);
        Ok(std::fs::read_dir(&path).with_context(|| format!("reading {path} ({})", self.name))?.count())
    }

    /// Resident memory once it stops moving: sampled every 250 ms until two
    /// samples are within 1% (or 5 s passed), in KiB.
    pub async fn settled_rss_kib(&self) -> anyhow::Result<u64> {
        let until = Instant::now() + Duration::from_secs(5);
        let mut last = self.rss_kib()?;
        loop {
            sleep(Duration::from_millis(250)).await;
            let now = self.rss_kib()?;
            if now.abs_diff(last) * 100 <= last || Instant::now() >= until {
                return Ok(now);
            }
            last = now;
        }
    }

    /// Kills the child and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = timeout(Duration::from_secs(5), self.child.wait()).await;
        if let Some(drain) = self.drain.take() {
            drain.abort();
        }
    }

    /// The last lines of the child's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

fn open_log(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log {}", path.display()))
}

/// Runs a client tool to completion (killed after `limit`); returns its stdout.
pub async fn run_tool(name: &str, args: &[String], limit: Duration) -> anyhow::Result<String> {
    let program = find_tool(name).with_context(|| format!("{name} not found"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    let out = timeout(limit, cmd.output())
        .await
        .with_context(|| format!("{name} {} still running after {limit:?}", args.join(" ")))?
        .with_context(|| format!("starting {name}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{name} {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        );
    }
    Ok(stdout)
}

/// A port on 127.0.0.1 that was free a moment ago (for nginx and iperf3,
/// which cannot report a port 0 they bound).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Raises this process's open-file limit to the hard limit (children inherit
/// it); returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}
