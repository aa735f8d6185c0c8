//! Hub read models, updated by the writer in the same transaction as the append.
//!
//! Each reducer turns one recorded event into SQL steps; the writer runs them in order,
//! pipelined with the insert of the events, before the commit. A reducer only copies the
//! event into rows: every rule was enforced by `decide` (or, for uniqueness and cycles,
//! is enforced by constraints these steps hit inside the same transaction).

mod api_keys;
mod organizations;
pub mod rebuild;
mod users;
mod workspaces;

use shared::{DecodeError, RecordedEvent};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

pub type Param = Box<dyn ToSql + Send + Sync>;

/// One statement of a reducer.
pub struct SqlStep {
    pub sql: &'static str,
    pub params: Vec<Param>,
}

impl std::fmt::Debug for SqlStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Parameters may hold data that must not reach a log; the statement is enough.
        f.debug_struct("SqlStep").field("sql", &self.sql).finish_non_exhaustive()
    }
}

impl SqlStep {
    pub fn new(sql: &'static str, params: Vec<Param>) -> Self {
        Self { sql, params }
    }
}

/// Boxes statement parameters: `params![a, b]`.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        vec![$(Box::new($value) as $crate::projections::Param),*]
    };
}
pub(crate) use params;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("stream id `{0}` names no known aggregate")]
    UnknownStream(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Turns events into read-model updates.
pub trait Projector: Send + Sync + 'static {
    fn steps(&self, event: &RecordedEvent) -> Result<Vec<SqlStep>, ProjectionError>;
}

/// No read models: the bare event store.
pub struct NoProjections;

impl Projector for NoProjections {
    fn steps(&self, _: &RecordedEvent) -> Result<Vec<SqlStep>, ProjectionError> {
        Ok(Vec::new())
    }
}

/// The hub's read models.
pub struct ReadModels;

impl Projector for ReadModels {
    fn steps(&self, event: &RecordedEvent) -> Result<Vec<SqlStep>, ProjectionError> {
        let unknown = || ProjectionError::UnknownStream(event.stream_id.clone());
        let (category, id) = event.stream_id.split_once('-').ok_or_else(unknown)?;
        let id: Uuid = id.parse().map_err(|_| unknown())?;
        match category {
            "org" => Ok(organizations::steps(id, event)?),
            "key" => Ok(api_keys::steps(id, event)?),
            "workspace" => Ok(workspaces::steps(id, event)?),
            "user" => Ok(users::steps(id, event)?),
            _ => Err(unknown()),
        }
    }
}
