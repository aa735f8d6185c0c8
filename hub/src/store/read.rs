//! Reads from the log. They need no lock: positions are only visible once committed, and
//! commits happen in position order.

use shared::RecordedEvent;
use tokio_postgres::GenericClient;
use tokio_postgres::Row;

const COLUMNS: &str = "position, stream_id, stream_version, event_id, event_type, schema_version, \
                       data, metadata, recorded_at, prev_hash, hash";

pub(crate) fn from_row(row: &Row) -> RecordedEvent {
    RecordedEvent {
        position: row.get(0),
        stream_id: row.get(1),
        stream_version: row.get(2),
        event_id: row.get(3),
        event_type: row.get(4),
        schema_version: row.get(5),
        data: row.get(6),
        metadata: row.get(7),
        recorded_at: row.get(8),
        prev_hash: row.get(9),
        hash: row.get(10),
    }
}

pub(crate) async fn stream(
    client: &impl GenericClient,
    stream_id: &str,
    after_version: i64,
) -> Result<Vec<RecordedEvent>, tokio_postgres::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version");
    let rows = client.query(&sql, &[&stream_id, &after_version]).await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Every event of the given streams, grouped by stream and in version order: one query
/// however many streams (a subtree command loads thousands).
pub(crate) async fn streams(
    client: &impl GenericClient,
    stream_ids: &[&str],
) -> Result<Vec<RecordedEvent>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE stream_id = ANY($1) ORDER BY stream_id, stream_version");
    let rows = client.query(&sql, &[&stream_ids]).await?;
    Ok(rows.iter().map(from_row).collect())
}

pub(crate) async fn all(
    client: &impl GenericClient,
    after: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2");
    let rows = client.query(&sql, &[&after, &limit]).await?;
    Ok(rows.iter().map(from_row).collect())
}

pub(crate) async fn head_position(client: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    Ok(client.query_one("SELECT position FROM event_log_head", &[]).await?.get(0))
}

pub(crate) async fn stream_page(
    client: &impl GenericClient,
    stream_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND position > $2 ORDER BY position LIMIT $3");
    let rows = client.query(&sql, &[&stream_id, &after, &limit]).await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Up to `limit` events after `after` of the workspaces placed on `instance_id`, in order.
pub(crate) async fn placed_page(
    client: &impl GenericClient,
    instance_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, tokio_postgres::Error> {
    let columns = COLUMNS.split(", ").map(|c| format!("e.{}", c.trim())).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT {columns} FROM events e JOIN workspaces w ON e.stream_id = 'workspace-' || w.id::text \
         WHERE w.instance_id = $1 AND e.position > $2 ORDER BY e.position LIMIT $3"
    );
    let rows = client.query(&sql, &[&instance_id, &after, &limit]).await?;
    Ok(rows.iter().map(from_row).collect())
}
