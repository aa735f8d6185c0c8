//! Where a new workspace goes when the request names no instance: the live instance with
//! the fewest workspaces, from a view refreshed in the background, so placing costs no
//! query.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

/// How often the view of live instances is read again.
const REFRESH: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Placement {
    view: Mutex<View>,
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct View {
    /// Live instances and their workspace counts (as read, plus this hub's placements).
    instances: Vec<(String, i64)>,
    read_at: Option<Instant>,
}

impl Placement {
    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The least loaded live instance, counting this placement; `None` when no instance
    /// reported recently.
    pub async fn place(&self, pool: &Pool) -> Result<Option<String>, crate::http::ApiError> {
        if !self.fresh() {
            let _only_one = self.refreshing.lock().await;
            if !self.fresh() {
                self.refresh(pool).await?;
            }
        }
        let mut view = self.view();
        let least = view.instances.iter_mut().min_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        Ok(least.map(|(id, count)| {
            *count += 1;
            id.clone()
        }))
    }

    fn fresh(&self) -> bool {
        self.view().read_at.is_some_and(|at| at.elapsed() < REFRESH)
    }

    async fn refresh(&self, pool: &Pool) -> Result<(), crate::http::ApiError> {
        let client = pool.get().await?;
        let rows = client
            .query(
                "SELECT i.id, (SELECT count(*) FROM workspaces w WHERE w.instance_id = i.id AND w.status <> 'deleted') \
                 AS workspaces FROM instances i WHERE i.last_heartbeat_at > now() - make_interval(secs => $1)",
                &[&crate::http::instances::LIVE_SECONDS],
            )
            .await?;
        let mut view = self.view();
        view.instances = rows.iter().map(|row| (row.get("id"), row.get("workspaces"))).collect();
        view.read_at = Some(Instant::now());
        Ok(())
    }
}
