//! Reads from the log. They need no lock: positions are only visible once committed, and
//! commits happen in position order.

use shared::RecordedEvent;
use shared::feed::RawEvent;
use tokio_postgres::GenericClient;
use tokio_postgres::Row;

const COLUMNS: &str = "position, stream_id, stream_version, event_id, event_type, schema_version, \
                       data, metadata, recorded_at, prev_hash, hash";

/// A row of [`COLUMNS`] (unqualified or, in a join, `e.`-qualified: the names are the same).
fn from_row(row: &Row) -> Result<RecordedEvent, tokio_postgres::Error> {
    Ok(RecordedEvent {
        position: row.try_get("position")?,
        stream_id: row.try_get("stream_id")?,
        stream_version: row.try_get("stream_version")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        data: row.try_get("data")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

pub(crate) async fn stream(
    client: &impl GenericClient,
    stream_id: &str,
    after_version: i64,
) -> Result<Vec<RecordedEvent>, tokio_postgres::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version");
    let rows = client.query(&sql, &[&stream_id, &after_version]).await?;
    rows.iter().map(from_row).collect()
}

/// Every event of the given streams, grouped by stream and in version order: one query
/// however many streams (a subtree command loads thousands).
pub(crate) async fn streams(
    client: &impl GenericClient,
    stream_ids: &[&str],
) -> Result<Vec<RecordedEvent>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE stream_id = ANY($1) ORDER BY stream_id, stream_version");
    let rows = client.query(&sql, &[&stream_ids]).await?;
    rows.iter().map(from_row).collect()
}

pub(crate) async fn all(
    client: &impl GenericClient,
    after: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2");
    let rows = client.query(&sql, &[&after, &limit]).await?;
    rows.iter().map(from_row).collect()
}

/// JSON text of a `jsonb` (or `json`) column as the database sends it, unparsed.
struct JsonText(String);

impl<'a> tokio_postgres::types::FromSql<'a> for JsonText {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        // jsonb's binary form is a version byte (1) and then the text.
        let text = if *ty == tokio_postgres::types::Type::JSONB {
            match raw.split_first() {
                Some((1, text)) => text,
                _ => return Err("unsupported jsonb version".into()),
            }
        } else {
            raw
        };
        Ok(Self(std::str::from_utf8(text)?.to_owned()))
    }

    tokio_postgres::types::accepts!(JSON, JSONB);
}

/// A row of [`COLUMNS`] with its payload and metadata left as JSON text.
fn raw_from_row(row: &Row) -> Result<RawEvent, tokio_postgres::Error> {
    Ok(RawEvent {
        position: row.try_get("position")?,
        stream_id: row.try_get("stream_id")?,
        stream_version: row.try_get("stream_version")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        data: row.try_get::<_, JsonText>("data")?.0,
        metadata: row.try_get::<_, JsonText>("metadata")?.0,
        recorded_at: row.try_get("recorded_at")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// [`all`], the payloads left as JSON text (to serve the feed).
pub(crate) async fn all_raw(
    client: &impl GenericClient,
    after: i64,
    limit: i64,
) -> Result<Vec<RawEvent>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2");
    let rows = client.query(&sql, &[&after, &limit]).await?;
    rows.iter().map(raw_from_row).collect()
}

/// [`stream_page`], the payloads left as JSON text (to serve the feed).
pub(crate) async fn stream_page_raw(
    client: &impl GenericClient,
    stream_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<RawEvent>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND position > $2 ORDER BY position LIMIT $3");
    let rows = client.query(&sql, &[&stream_id, &after, &limit]).await?;
    rows.iter().map(raw_from_row).collect()
}

pub(crate) async fn head_position(client: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    client.query_one("SELECT position FROM event_log_head", &[]).await?.try_get("position")
}

pub(crate) async fn stream_page(
    client: &impl GenericClient,
    stream_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND position > $2 ORDER BY position LIMIT $3");
    let rows = client.query(&sql, &[&stream_id, &after, &limit]).await?;
    rows.iter().map(from_row).collect()
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
    rows.iter().map(from_row).collect()
}
