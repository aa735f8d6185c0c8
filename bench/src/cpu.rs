//! CPU time spent during a phase, read from `/proc`: by the whole machine and by each
//! program of the benchmark. A throughput figure then comes with what each unit of work
//! cost and with the most that the machine's cores could give at that cost.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::Instant;

/// The programs whose time is counted, by their process name (`comm`): the benchmark's
/// descendants of these names, with their waited-for children's time; and the benchmark's
/// own waited-for children (`wrk`, `pgbench`, `instance rebuild`). Time spent after a
/// phase's end on its account (the embedded instance still applying its events) is not
/// counted in it.
const PROGRAMS: &[&str] = &["postgres", "hub", "instance", "nats-server"];
const CHILDREN: &str = "the benchmark's children";

/// One of [`PROGRAMS`] and the ticks one of its processes used.
type Counted = (&'static str, u64);

/// A reading of the clocks; two readings make a [`Spent`].
pub struct Reading {
    at: Instant,
    /// Ticks of every CPU: busy, and in all.
    machine: (u64, u64),
    /// Ticks each program's live processes (the benchmark's descendants) have used, and the
    /// benchmark's waited children.
    programs: BTreeMap<&'static str, u64>,
}

/// What a phase cost in CPU.
pub struct Spent {
    seconds: f64,
    cores: usize,
    /// Cores the whole machine kept busy on average (other work included).
    machine_busy: f64,
    /// CPU seconds by program.
    programs: Vec<(&'static str, f64)>,
}

/// The kernel's clock ticks per second (`USER_HZ`, 100 on mainstream Linux).
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|ticks: &f64| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// The fields after a `/proc/<pid>/stat` line's process name, and that name.
fn stat_fields(stat: &str) -> Option<(&str, Vec<u64>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    // From the state (field 3) on; utime, stime, cutime and cstime are fields 14 to 17.
    let fields = stat.get(close + 1..)?.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    Some((name, fields))
}

impl Reading {
    pub fn take() -> Reading {
        // Every process: its parent, and the program and ticks of those named in PROGRAMS.
        let mut processes: HashMap<u64, (u64, Option<Counted>)> = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u64>() else { continue };
                let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
                let Some((name, fields)) = stat_fields(&stat) else { continue };
                // Its own time and its children's that it waited for: PostgreSQL's backends
                // that exit during a phase are counted in the postmaster's.
                let program =
                    PROGRAMS.iter().find(|p| **p == name).map(|p| (*p, fields.iter().skip(10).take(4).sum::<u64>()));
                processes.insert(pid, (fields.first().copied().unwrap_or(0), program));
            }
        }
        // Only the benchmark's own processes count: its descendants.
        let mut children: HashMap<u64, Vec<u64>> = HashMap::new();
        for (pid, (parent, _)) in &processes {
            children.entry(*parent).or_default().push(*pid);
        }
        let mut programs: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut descendants = children.get(&u64::from(std::process::id())).cloned().unwrap_or_default();
        while let Some(pid) = descendants.pop() {
            if let Some((_, Some((program, ticks)))) = processes.get(&pid) {
                *programs.entry(program).or_default() += ticks;
            }
            descendants.extend(children.get(&pid).into_iter().flatten());
        }
        if let Some((_, fields)) = std::fs::read_to_string("/proc/self/stat").ok().as_deref().and_then(stat_fields) {
            programs.insert(CHILDREN, fields.get(12).unwrap_or(&0) + fields.get(13).unwrap_or(&0));
        }
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| {
                let ticks: Vec<u64> =
                    stat.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|t| t.parse().ok()).collect();
                let all: u64 = ticks.iter().sum();
                let idle = ticks.get(3).unwrap_or(&0) + ticks.get(4).unwrap_or(&0);
                Some((all - idle, all))
            })
            .unwrap_or_default();
        Reading { at: Instant::now(), machine, programs }
    }

    /// What was spent from `self` to `later`.
    pub fn to(&self, later: &Reading) -> Spent {
        let tick = ticks_per_second();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let seconds = later.at.duration_since(self.at).as_secs_f64();
        let (busy, all) =
            (later.machine.0.saturating_sub(self.machine.0), later.machine.1.saturating_sub(self.machine.1));
        let programs = later
            .programs
            .iter()
            .map(|(name, ticks)| (*name, ticks.saturating_sub(*self.programs.get(name).unwrap_or(&0)) as f64 / tick))
            .filter(|(_, spent)| *spent > 0.0)
            .collect();
        Spent { seconds, cores, machine_busy: cores as f64 * busy as f64 / all.max(1) as f64, programs }
    }
}

impl Spent {
    /// CPU microseconds per unit, all the benchmark's programs together.
    fn per_unit_us(&self, units: f64) -> f64 {
        1e6 * self.programs.iter().map(|(_, s)| s).sum::<f64>() / units.max(1.0)
    }

    /// Prints the CPU spent per `unit` (`units` of them in the phase) by each program, and
    /// the most units per second the machine's cores could give at that cost; `baseline`
    /// (units per second) puts that ceiling in the benchmark's ratio.
    pub fn print(&self, what: &str, units: f64, unit: &str, baseline: Option<f64>) {
        if self.programs.is_empty() || !units.is_finite() || units < 1.0 {
            println!("CPU during {what}: not measured ({units} {unit}s; no process of the benchmark's found in /proc)");
            return;
        }
        let per_unit = self.per_unit_us(units);
        let by_program: Vec<String> =
            self.programs.iter().map(|(name, s)| format!("{name} {:.0}", 1e6 * s / units.max(1.0))).collect();
        println!(
            "CPU during {what} ({:.1} s): the machine kept {:.2} of its {} cores busy; µs of CPU per {unit}: {} \
             (all {per_unit:.0})",
            self.seconds,
            self.machine_busy,
            self.cores,
            by_program.join(", ")
        );
        let ceiling = self.cores as f64 * 1e6 / per_unit.max(f64::MIN_POSITIVE);
        match baseline.filter(|b| b.is_finite() && *b > 0.0) {
            Some(baseline) => println!(
                "  at that cost, {} cores give at most {ceiling:.0} {unit}s/s: {:.2} × the baseline",
                self.cores,
                ceiling / baseline
            ),
            None => println!("  at that cost, {} cores give at most {ceiling:.0} {unit}s/s", self.cores),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stat_fields;

    #[test]
    fn a_stat_line_is_read_past_a_name_with_spaces_and_parentheses() {
        let line = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 111 222 333 444 20 0";
        let (name, fields) = stat_fields(line).unwrap();
        assert_eq!(name, "a (b) c");
        assert_eq!(&fields[10..14], &[111, 222, 333, 444]);
    }
}
