//! Supervised background tasks: each runs in a tokio task of its own; one that returns,
//! fails or panics is restarted with exponential backoff, and while it is down the
//! process's `/readyz` says so (a process whose consumer died must not look healthy).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// First pause before a restart; doubled after each quick failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest pause before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A run that lasted this long was healthy: the next failure starts the backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The background tasks of a process and whether each is running.
#[derive(Default)]
pub struct Tasks {
    running: Mutex<BTreeMap<&'static str, bool>>,
}

impl Tasks {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Runs `task` under supervision as `name`. Each run gets a fresh future from `task`;
    /// a run that fails (`Err`) or panics is restarted after a backoff. `Ok` means the
    /// task has no more work (e.g. its input closed): it is not restarted.
    pub fn spawn<F, Fut>(self: &Arc<Self>, name: &'static str, mut task: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.set(name, true);
        let tasks = self.clone();
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                tasks.set(name, true);
                let started = Instant::now();
                match tokio::spawn(task()).await {
                    Ok(Ok(())) => {
                        tasks.running.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
                        return;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(task = name, error = %format!("{error:#}"), "background task failed; restarting")
                    }
                    Err(error) => tracing::error!(task = name, %error, "background task panicked; restarting"),
                }
                tasks.set(name, false);
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = FIRST_BACKOFF;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }

    fn set(&self, name: &'static str, running: bool) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).insert(name, running);
    }

    /// The names of the tasks that are down now.
    pub fn down(&self) -> Vec<&'static str> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.iter().filter(|(_, up)| !**up).map(|(name, _)| *name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_failing_task_is_down_until_it_is_restarted_and_runs() {
        let tasks = Tasks::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        tasks.spawn("flaky", move || {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    anyhow::bail!("first run fails");
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::SeqCst) < 1 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(tasks.down(), ["flaky"], "down during the backoff");
        while runs.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(tasks.down().is_empty(), "up once restarted");
    }

    #[tokio::test]
    async fn a_panicking_task_is_restarted() {
        let tasks = Tasks::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        tasks.spawn("panics", move || {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("boom");
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "restarted after a panic");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
