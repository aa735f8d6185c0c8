//! Child processes that never outlive the test binary, and free ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A free loopback port. Another process could take it before we bind it; callers that
/// start servers retry on a bind failure.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS hands out a free loopback port")
}

/// A scratch directory for this test binary, removed by the watchdog at exit.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("admin-api-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("pids")).expect("create the scratch directory");
        start_watchdog(&dir);
        dir
    })
}

/// A fresh directory under the scratch directory.
pub fn new_dir(prefix: &str) -> PathBuf {
    let dir = scratch_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create a test directory");
    dir
}

/// Registers a child for the watchdog, which sends it `signal` once the test binary exits.
pub fn register(pid: u32, signal: &str) {
    let _ = std::fs::write(scratch_dir().join("pids").join(pid.to_string()), signal);
}

pub fn unregister(pid: u32) {
    let _ = std::fs::remove_file(scratch_dir().join("pids").join(pid.to_string()));
}

/// Sends a signal by name (`TERM`, `KILL`, `INT`, `STOP`, `CONT`).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

#[expect(clippy::zombie_processes, reason = "the watchdog must outlive this process")]
fn start_watchdog(dir: &Path) {
    // Polls for the test binary's exit, then stops what it started and removes the files.
    let script = r#"
        while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
        for f in "$2"/pids/*; do [ -e "$f" ] && kill -"$(cat "$f")" "$(basename "$f")" 2>/dev/null; done
        sleep 3
        for f in "$2"/pids/*; do [ -e "$f" ] && kill -KILL "$(basename "$f")" 2>/dev/null; done
        rm -rf "$2"
    "#;
    Command::new("sh")
        .args(["-c", script, "watchdog"])
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the cleanup watchdog");
}

/// Finds a program on PATH, then in the given extra directories.
pub fn find_program(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
