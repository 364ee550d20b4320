//! Runs `wrk` (one thread, keep-alive, `--latency`) and reads its text
//! output: requests per second, the 50th and 99th latency percentiles, the
//! bytes read per second, and anything that went wrong (socket errors,
//! non-2xx answers). Over `https://` wrk does not check the certificate.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::lab::Endpoint;
use crate::procs;

/// What one wrk run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkResult {
    /// Completed requests per second.
    pub requests_per_sec: f64,
    /// Median latency, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Bytes read per second (`Transfer/sec`), heads included.
    pub bytes_per_sec: f64,
    /// Completed requests in all.
    pub requests: u64,
    /// Answers that were not 2xx or 3xx.
    pub non_2xx: u64,
    /// Connect, read, write errors and timeouts, summed.
    pub socket_errors: u64,
}

/// One wrk load: where to send it and how hard.
#[derive(Debug, Clone)]
pub struct Load {
    /// Address wrk connects to.
    pub addr: SocketAddr,
    /// `Host` header to send instead of the address (the tunnel's vhost).
    pub host: Option<String>,
    /// Open connections (`-c`).
    pub connections: u32,
    /// Length of the run (`-d`).
    pub duration: Duration,
    /// Speak HTTPS instead of HTTP.
    pub tls: bool,
    /// The path every request asks for.
    pub path: &'static str,
}

impl Load {
    /// `connections` keep-alive connections asking `endpoint` for `/`.
    pub fn new(endpoint: Endpoint, connections: u32, duration: Duration) -> Self {
        Self { addr: endpoint.addr, host: endpoint.host, connections, duration, tls: endpoint.tls, path: "/" }
    }

    /// wrk's arguments for this load.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-t1".to_owned(),
            format!("-c{}", self.connections),
            format!("-d{}s", self.duration.as_secs().max(1)),
            "--latency".to_owned(),
            "--timeout".to_owned(),
            "5s".to_owned(),
        ];
        if let Some(host) = &self.host {
            args.extend(["-H".to_owned(), format!("Host: {host}")]);
        }
        let scheme = if self.tls { "https" } else { "http" };
        args.push(format!("{scheme}://{}{}", self.addr, self.path));
        args
    }

    /// Runs wrk once and parses its report.
    pub async fn run(&self) -> anyhow::Result<WrkResult> {
        let limit = self.duration + Duration::from_secs(15);
        let out = procs::run_tool("wrk", &self.args(), limit).await?;
        parse(&out).with_context(|| format!("reading wrk's report for {}:\n{out}", self.args().join(" ")))
    }
}

/// Succeeds once `endpoint` answers: one connection for one second must
/// complete a request and see no error (for HTTPS routes, where the bench
/// has no TLS client of its own).
pub async fn answers(endpoint: &Endpoint) -> anyhow::Result<()> {
    let r = Load::new(endpoint.clone(), 1, Duration::from_secs(1)).run().await?;
    if r.requests == 0 || r.non_2xx + r.socket_errors > 0 {
        bail!("{} requests, {} non-2xx, {} socket errors", r.requests, r.non_2xx, r.socket_errors);
    }
    Ok(())
}

/// Parses the report `wrk --latency` prints.
pub fn parse(out: &str) -> anyhow::Result<WrkResult> {
    let mut result = WrkResult {
        requests_per_sec: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        bytes_per_sec: f64::NAN,
        requests: 0,
        non_2xx: 0,
        socket_errors: 0,
    };
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => result.requests_per_sec = value.parse().context("Requests/sec")?,
            ["Transfer/sec:", value] => result.bytes_per_sec = bytes(value)?,
            ["50%", value] => result.p50_ms = millis(value)?,
            ["99%", value] => result.p99_ms = millis(value)?,
            [count, "requests", "in", ..] => result.requests = count.parse().context("request count")?,
            ["Non-2xx", "or", "3xx", "responses:", count] => result.non_2xx = count.parse().context("Non-2xx")?,
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                result.socket_errors = rest
                    .chunks(2)
                    .filter_map(|pair| pair.get(1))
                    .map(|n| n.trim_end_matches(',').parse::<u64>().unwrap_or(0))
                    .sum();
            }
            _ => {}
        }
    }
    if result.requests_per_sec.is_nan() || result.p50_ms.is_nan() || result.p99_ms.is_nan() {
        bail!("no Requests/sec or latency percentiles (was --latency given?)");
    }
    Ok(result)
}

/// Converts wrk's `345.00us`, `1.03ms`, `2.00s`, `1.50m` to milliseconds.
fn millis(value: &str) -> anyhow::Result<f64> {
    let split = value.find(|c: char| c.is_ascii_alphabetic()).with_context(|| format!("{value:?} has no unit"))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().with_context(|| format!("{value:?} is not a duration"))?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => bail!("{value:?}: unknown unit {unit:?}"),
    };
    Ok(number * scale)
}

/// Converts wrk's `512.00B`, `7.99MB`, `1.20GB` (powers of 1024) to bytes.
fn bytes(value: &str) -> anyhow::Result<f64> {
    let split = value.find(|c: char| c.is_ascii_alphabetic()).with_context(|| format!("{value:?} has no unit"))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().with_context(|| format!("{value:?} is not a size"))?;
    let power = match unit {
        "B" => 0,
        "KB" => 1,
        "MB" => 2,
        "GB" => 3,
        "TB" => 4,
        _ => bail!("{value:?}: unknown unit {unit:?}"),
    };
    Ok(number * 1024f64.powi(power))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "Running 5s test @ http://127.0.0.1:40001/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   370.65us  120.11us   9.87ms   93.12%
    Req/Sec    24.80k     1.20k   26.00k    80.00%
  Latency Distribution
     50%  345.00us
     75%  400.00us
     90%  450.00us
     99%    1.03ms
  123456 requests in 5.00s, 40.00MB read
Requests/sec:  24680.50
Transfer/sec:      7.99MB
";

    #[test]
    fn reads_rate_percentiles_and_count() {
        let r = parse(CLEAN).unwrap();
        assert_eq!(r.requests_per_sec, 24680.5);
        assert!((r.p50_ms - 0.345).abs() < 1e-9);
        assert!((r.p99_ms - 1.03).abs() < 1e-9);
        assert!((r.bytes_per_sec - 7.99 * 1024.0 * 1024.0).abs() < 1e-3);
        assert_eq!((r.requests, r.non_2xx, r.socket_errors), (123456, 0, 0));
    }

    #[test]
    fn reads_errors_and_non_2xx() {
        let out = CLEAN.replace(
            "Requests/sec:",
            "  Socket errors: connect 1, read 2, write 0, timeout 4\n  Non-2xx or 3xx responses: 7\nRequests/sec:",
        );
        let r = parse(&out).unwrap();
        assert_eq!((r.non_2xx, r.socket_errors), (7, 7));
    }

    #[test]
    fn converts_every_unit() {
        assert_eq!(millis("2.00s").unwrap(), 2000.0);
        assert_eq!(millis("1.50m").unwrap(), 90_000.0);
        assert!(millis("3.0").is_err());
        assert!(millis("3.0xs").is_err());
    }

    #[test]
    fn converts_every_size() {
        assert_eq!(bytes("512.00B").unwrap(), 512.0);
        assert_eq!(bytes("1.50GB").unwrap(), 1.5 * 1024.0 * 1024.0 * 1024.0);
        assert!(bytes("3.0").is_err());
        assert!(bytes("3.0XB").is_err());
    }

    #[test]
    fn report_without_latency_is_an_error() {
        assert!(parse("Requests/sec: 10\n").is_err());
    }
}
