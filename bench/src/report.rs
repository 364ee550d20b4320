//! The results: a markdown table of tunnel/direct ratios (min / median /
//! max over the repetitions), a table of absolute figures (memory), notes,
//! and `bench/RESULTS.md` with the machine facts and the exact commands.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::stats::{ratios, Summary};

/// Marks the start of the part of RESULTS.md this program rewrites.
const BEGIN: &str = "<!-- terrier-bench:begin (generated; text outside these markers is kept) -->";
/// Marks its end.
const END: &str = "<!-- terrier-bench:end -->";

/// How a figure's values are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Requests per second.
    ReqPerSec,
    /// Milliseconds.
    Millis,
    /// Gigabits per second.
    Gbits,
}

impl Unit {
    fn show(self, value: f64) -> String {
        match self {
            Unit::ReqPerSec => format!("{value:.0} req/s"),
            Unit::Millis if value < 1.0 => format!("{:.0} µs", value * 1000.0),
            Unit::Millis => format!("{value:.2} ms"),
            Unit::Gbits => format!("{value:.2} Gbit/s"),
        }
    }
}

/// One figure measured both ways.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Spread of the direct runs.
    pub direct: Summary,
    /// Spread of the tunnel runs.
    pub tunnel: Summary,
    /// Spread of the per-repetition ratios tunnel / direct.
    pub ratio: Summary,
}

/// A row of the ratio table.
#[derive(Debug, Clone)]
pub struct RatioRow {
    /// What was measured, and which way ("HTTP req/s, -c32, HTTP vhost").
    pub figure: String,
    /// How to print direct and tunnel values.
    pub unit: Unit,
    /// The goal from issue 8, e.g. "≥ 0.40×".
    pub goal: &'static str,
    /// The figures, or why there are none.
    pub result: Result<Measured, String>,
}

/// A row of the absolute-figures table.
#[derive(Debug, Clone)]
pub struct ValueRow {
    /// What was measured.
    pub figure: String,
    /// The value as printed, or why there is none.
    pub value: Result<String, String>,
    /// The goal from issue 8, or "".
    pub goal: &'static str,
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Report {
    /// Tunnel/direct ratios.
    pub ratios: Vec<RatioRow>,
    /// Absolute figures.
    pub values: Vec<ValueRow>,
    /// Anything a reader must know to trust the figures (errors, non-2xx).
    pub notes: Vec<String>,
}

impl Report {
    /// Adds a ratio row from paired per-repetition samples.
    pub fn ratio(&mut self, figure: String, unit: Unit, goal: &'static str, direct: &[f64], tunnel: &[f64]) {
        // A failed run is NaN; its repetition is left out of all three summaries.
        let (direct, tunnel): (Vec<f64>, Vec<f64>) =
            direct.iter().zip(tunnel).filter(|(d, t)| d.is_finite() && t.is_finite()).unzip();
        let result = match (Summary::of(&direct), Summary::of(&tunnel), Summary::of(&ratios(&tunnel, &direct))) {
            (Some(direct), Some(tunnel), Some(ratio)) => Ok(Measured { direct, tunnel, ratio }),
            _ => Err("n/a (no complete repetition)".to_owned()),
        };
        self.ratios.push(RatioRow { figure, unit, goal, result });
    }

    /// Adds a ratio row that could not be measured.
    pub fn ratio_missing(&mut self, figure: String, unit: Unit, goal: &'static str, why: String) {
        self.ratios.push(RatioRow { figure, unit, goal, result: Err(why) });
    }

    /// Adds an absolute figure.
    pub fn value(&mut self, figure: String, value: Result<String, String>, goal: &'static str) {
        self.values.push(ValueRow { figure, value, goal });
    }

    /// Adds a note under the tables.
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// The tables and notes as markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        if !self.ratios.is_empty() {
            out.push_str(
                "| figure | direct (median) | tunnel (median) | ratio min | ratio median | ratio max | goal |\n",
            );
            out.push_str("|---|---:|---:|---:|---:|---:|---|\n");
            for row in &self.ratios {
                match &row.result {
                    Ok(m) => {
                        let _ = writeln!(
                            out,
                            "| {} | {} | {} | {:.2}× | **{:.2}×** | {:.2}× | {} |",
                            row.figure,
                            row.unit.show(m.direct.median),
                            row.unit.show(m.tunnel.median),
                            m.ratio.min,
                            m.ratio.median,
                            m.ratio.max,
                            row.goal
                        );
                    }
                    Err(why) => {
                        let _ = writeln!(out, "| {} | {why} | | | | | {} |", row.figure, row.goal);
                    }
                }
            }
            out.push('\n');
        }
        if !self.values.is_empty() {
            out.push_str("| figure | value | goal |\n|---|---:|---|\n");
            for row in &self.values {
                let value = row.value.as_ref().map_or_else(|why| why.clone(), |v| v.clone());
                let _ = writeln!(out, "| {} | {value} | {} |", row.figure, row.goal);
            }
            out.push('\n');
        }
        if !self.notes.is_empty() {
            out.push_str("Notes:\n\n");
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
            out.push('\n');
        }
        out
    }
}

/// How a run went, besides its figures.
#[derive(Debug, Default)]
pub struct RunInfo {
    /// Every command line started, in order.
    pub commands: Vec<String>,
    /// Time spent in `cargo build --release`.
    pub build: Duration,
    /// Time of the whole run, build included.
    pub total: Duration,
    /// `/proc/loadavg` when the run started (other work on the machine skews absolute figures).
    pub load_at_start: String,
}

/// Writes the generated block of `path` (RESULTS.md): date, machine facts,
/// commands, tables, run time. Text outside the markers is kept, so a
/// hand-written history of optimisation steps survives reruns.
pub fn write_results(path: &Path, report: &Report, run: &RunInfo) -> anyhow::Result<()> {
    let mut block = String::new();
    let _ = writeln!(block, "{BEGIN}\n");
    let _ = writeln!(block, "## Latest run: {}\n", shell("date -u '+%Y-%m-%d %H:%M UTC'"));
    let _ = writeln!(
        block,
        "Total run time: {:.0} s, of which {:.0} s building. Commit: `{}` (`-dirty`: uncommitted changes were measured too).\n",
        run.total.as_secs_f64(),
        run.build.as_secs_f64(),
        shell("git describe --always --dirty")
    );
    let _ =
        writeln!(block, "Load average (1, 5, 15 min) at start: {}; at end: {}.\n", run.load_at_start, load_average());
    let _ = writeln!(
        block,
        "### Machine\n\n```\n$ nproc\n{}\n$ free -g\n{}\n$ uname -srm\n{}\ncpu: {}\n{}\n{}\n{}\n```\n",
        shell("nproc"),
        shell("free -g"),
        shell("uname -srm"),
        shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'"),
        shell("nginx -v 2>&1"),
        shell("wrk --version 2>&1 | head -1"),
        shell("iperf3 --version | head -1"),
    );
    block.push_str(
        "### Results\n\nRatios are tunnel / direct, paired per repetition (direct and tunnel runs interleaved); ",
    );
    block.push_str("for req/s and Gbit/s higher is better, for latency and time lower is better.\n\n");
    block.push_str(&report.markdown());
    let _ = writeln!(block, "### Commands\n\n```\ncargo run --release -p terrier-bench -- all");
    if !run.build.is_zero() {
        let _ = writeln!(block, "cargo build --release -p terrier-server -p terrier-agent   # run by the bench first");
    }
    push_commands(&mut block, &run.commands);
    let _ = writeln!(block, "```\n\n{END}");

    let old = std::fs::read_to_string(path).unwrap_or_default();
    let text = match (old.find(BEGIN), old.find(END)) {
        (Some(start), Some(end)) if start < end => {
            format!("{}{}{}", &old[..start], block.trim_end(), &old[end + END.len()..])
        }
        _ => format!(
            "# terrier benchmark results\n\nWritten by `cargo run --release -p terrier-bench -- all` \
             (see README.md). Record optimisation steps and their effect below the generated block.\n\n{block}"
        ),
    };
    std::fs::write(path, text)?;
    Ok(())
}

/// Writes the `rivals` block of `path` (RESULTS.md): date, commit, load,
/// the table of terrier beside rathole and bore, and the commands run.
pub fn write_rivals(path: &Path, report: &Report, run: &RunInfo) -> anyhow::Result<()> {
    let mut block = String::new();
    let _ = writeln!(
        block,
        "Rivals run {} (`cargo run --release -p terrier-bench -- --no-build rivals --record`), commit `{}`, \
         load average at start {}, at end {}. Ratios are each tunnel / direct of the same repetition.\n",
        shell("date -u '+%Y-%m-%d %H:%M UTC'"),
        shell("git describe --always --dirty"),
        run.load_at_start,
        load_average()
    );
    block.push_str(&report.markdown());
    block.push_str("Commands:\n\n```\n");
    push_commands(&mut block, &run.commands);
    block.push_str("```\n");
    write_block(path, "rivals", &block)
}

/// Appends each command line once, in the order first run.
fn push_commands(block: &mut String, commands: &[String]) {
    let mut seen = std::collections::HashSet::new();
    for command in commands.iter().filter(|c| seen.insert(c.as_str())) {
        let _ = writeln!(block, "{command}");
    }
}

/// Replaces the block between `<!-- terrier-bench NAME:begin … -->` and
/// `<!-- terrier-bench NAME:end -->` in `path` with `content` (appended at
/// the end when the markers are missing); the rest of the file is kept.
pub fn write_block(path: &Path, name: &str, content: &str) -> anyhow::Result<()> {
    let begin = format!("<!-- terrier-bench {name}:begin (generated; text outside these markers is kept) -->");
    let end = format!("<!-- terrier-bench {name}:end -->");
    let block = format!("{begin}\n\n{}\n\n{end}", content.trim_end());
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let text = match (old.find(&begin), old.find(&end)) {
        (Some(start), Some(stop)) if start < stop => {
            format!("{}{block}{}", &old[..start], &old[stop + end.len()..])
        }
        _ => format!("{}\n{block}\n", old.trim_end()),
    };
    std::fs::write(path, text)?;
    Ok(())
}

/// The 1, 5 and 15 minute load averages from /proc/loadavg.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Output of a shell one-liner (trimmed), or "?" when it fails.
pub fn shell(command: &str) -> String {
    Command::new("sh")
        .args(["-c", command])
        .current_dir(crate::procs::workspace_root())
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim_end().trim_start_matches('\n').to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_medians_ratios_and_missing_rows() {
        let mut report = Report::default();
        report.ratio("HTTP req/s".into(), Unit::ReqPerSec, "≥ 0.40×", &[100.0, 200.0, 300.0], &[50.0, 50.0, 60.0]);
        report.ratio_missing("pool".into(), Unit::Millis, "≤ 1.6×", "n/a (pool not implemented)".into());
        report.value("server RSS idle".into(), Ok("3.1 MiB".into()), "≤ 4 MiB");
        let md = report.markdown();
        assert!(md.contains("| HTTP req/s | 200 req/s | 50 req/s | 0.20× | **0.25×** | 0.50× | ≥ 0.40× |"), "{md}");
        assert!(md.contains("| pool | n/a (pool not implemented) |"), "{md}");
        assert!(md.contains("| server RSS idle | 3.1 MiB | ≤ 4 MiB |"), "{md}");
    }

    #[test]
    fn rewrite_keeps_text_outside_the_markers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("RESULTS.md");
        let report = Report::default();
        write_results(&path, &report, &RunInfo::default()).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{first}\n## History\n\nstep 1: faster\n")).unwrap();
        let run = RunInfo { commands: vec!["wrk x".into()], ..RunInfo::default() };
        write_results(&path, &report, &run).unwrap();
        let second = std::fs::read_to_string(&path).unwrap();
        assert!(second.contains("step 1: faster") && second.contains("wrk x"), "{second}");
        assert_eq!(second.matches(BEGIN).count(), 1);
    }
}
