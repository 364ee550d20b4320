//! Runs the `iperf3` client (one TCP stream, JSON report) and reads the
//! throughput the receiving side saw.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use crate::procs;

/// One iperf3 transfer.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The iperf3 server, directly or through a tunnel port.
    pub addr: SocketAddr,
    /// `-R`: the server sends and the client receives.
    pub reverse: bool,
    /// Measured seconds (`-t`); one more second is omitted at the start (`-O 1`).
    pub duration: Duration,
}

impl Transfer {
    /// iperf3's arguments for this transfer.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-c".to_owned(),
            self.addr.ip().to_string(),
            "-p".to_owned(),
            self.addr.port().to_string(),
            "-t".to_owned(),
            self.duration.as_secs().max(1).to_string(),
            "-O".to_owned(),
            "1".to_owned(),
            "--connect-timeout".to_owned(),
            "5000".to_owned(),
            "-J".to_owned(),
        ];
        if self.reverse {
            args.push("-R".to_owned());
        }
        args
    }

    /// Runs the transfer; returns the received throughput in Gbit/s.
    pub async fn run(&self) -> anyhow::Result<f64> {
        let limit = self.duration + Duration::from_secs(20);
        let out = procs::run_tool("iperf3", &self.args(), limit).await?;
        parse_gbits(&out).with_context(|| format!("reading iperf3's report for {}", self.args().join(" ")))
    }
}

/// Reads `end.sum_received.bits_per_second` from `iperf3 -J` output, in Gbit/s.
pub fn parse_gbits(json: &str) -> anyhow::Result<f64> {
    let report: serde_json::Value = serde_json::from_str(json).context("not JSON")?;
    if let Some(error) = report.get("error").and_then(|e| e.as_str()) {
        anyhow::bail!("iperf3: {error}");
    }
    let bits = report
        .pointer("/end/sum_received/bits_per_second")
        .and_then(|b| b.as_f64())
        .context("no end.sum_received.bits_per_second")?;
    Ok(bits / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_received_throughput() {
        let json = r#"{"end":{"sum_sent":{"bits_per_second":9e9},"sum_received":{"bits_per_second":8.5e9}}}"#;
        assert_eq!(parse_gbits(json).unwrap(), 8.5);
    }

    #[test]
    fn reports_iperf_errors() {
        let err = parse_gbits(r#"{"start":{},"error":"unable to connect to server"}"#).unwrap_err();
        assert!(err.to_string().contains("unable to connect"));
    }
}
