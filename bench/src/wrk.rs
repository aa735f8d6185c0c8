//! HTTP load with `wrk`: a phase of `seconds` on a number of connections (2 threads),
//! every answer counted by status (never fatal), and the latency's p50 and p99.
//!
//! A script gives `wrk` its requests (`wrk.method`, `wrk.body`, or a `request()`
//! function) and ends with [`COLLECT`], which counts and reports the answers.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

/// The most time `wrk` gets beyond its phase.
pub const SLACK: Duration = Duration::from_secs(120);

/// The end of every script: keeps each thread (and its id, the global `tid`, numbered from
/// 1), counts answers by status in each thread, and prints the counts, the phase's length
/// and latency for [`run`] to read. Chunk-level locals are copied into each thread's state;
/// `setup` and `done` run in the main state, hence `thread:set` and `thread:get`.
pub const COLLECT: &str = r#"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function response(status, headers, body)
  statuses = statuses or {}
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      io.write(string.format("bench-status %d %d\n", status, n))
    end
  end
  io.write(string.format("bench-duration-us %d\n", summary.duration))
  io.write(string.format("bench-p50-us %d\n", latency:percentile(50)))
  io.write(string.format("bench-p99-us %d\n", latency:percentile(99)))
end
"#;

/// What `wrk` reported: answers by status, the phase's length and latency.
#[derive(Debug, Default)]
pub struct Load {
    pub statuses: BTreeMap<u16, u64>,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub socket_errors: String,
    /// Anything else worth showing with the counts (e.g. what a server logged meanwhile).
    pub notes: Vec<String>,
}

impl Load {
    /// Answers with a status `accept` takes.
    pub fn count(&self, accept: impl Fn(u16) -> bool) -> u64 {
        self.statuses.iter().filter(|(s, _)| accept(**s)).map(|(_, n)| n).sum()
    }

    /// Answers per second with a status `accept` takes.
    pub fn rate(&self, accept: impl Fn(u16) -> bool) -> f64 {
        self.count(accept) as f64 / self.seconds
    }

    /// The counts by status, socket errors and notes, on one line.
    pub fn summary(&self) -> String {
        let statuses: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        let mut text = statuses.join(", ");
        if !self.socket_errors.is_empty() {
            text.push_str(&format!("; {}", self.socket_errors));
        }
        for note in &self.notes {
            text.push_str(&format!("; {note}"));
        }
        text
    }
}

/// Runs a program to its end, killed after `limit`; returns its standard output.
pub fn run_bounded(command: &mut Command, limit: Duration) -> anyhow::Result<String> {
    let program = format!("{:?}", command.get_program());
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = done.send(());
        out
    });
    if finished.recv_timeout(limit).is_err() {
        e2e::process::signal(pid, "KILL");
    }
    let out = waiter.join().map_err(|_| anyhow::anyhow!("waiting for {program}"))??;
    if !out.status.success() {
        bail!("{program} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `wrk` with `script` (written as `<dir>/<name>.lua`, ending with [`COLLECT`])
/// against `url` for `seconds` on `connections`, to its end (killed past the phase and
/// [`SLACK`]).
pub fn run(url: &str, connections: usize, dir: &Path, name: &str, script: &str, seconds: u64) -> anyhow::Result<Load> {
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, script)?;
    let program = e2e::process::find_program("wrk", &[])
        .context("`wrk` not found: install it (bench/run.sh does, with apt-get)")?;
    let out = run_bounded(
        Command::new(program)
            .args(["-c", &connections.to_string(), "-t", "2", "-d", &format!("{seconds}s"), "--timeout", "30s", "-s"])
            .arg(&path)
            .arg(url),
        Duration::from_secs(seconds) + SLACK,
    )?;
    let mut load = Load::default();
    for line in out.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["bench-status", status, n] => *load.statuses.entry(status.parse()?).or_default() += n.parse::<u64>()?,
            ["bench-duration-us", us] => load.seconds = us.parse::<f64>()? / 1e6,
            ["bench-p50-us", us] => load.p50_ms = us.parse::<f64>()? / 1e3,
            ["bench-p99-us", us] => load.p99_ms = us.parse::<f64>()? / 1e3,
            _ if line.trim_start().starts_with("Socket errors") => load.socket_errors = line.trim().to_owned(),
            _ => {}
        }
    }
    if load.seconds <= 0.0 {
        bail!("no summary in wrk's report:\n{out}");
    }
    Ok(load)
}
