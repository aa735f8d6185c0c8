//! The interaction keys of the workspaces this instance serves, in a table keyed by the
//! key's peppered hash (`interaction_keys`), so `POST /v1/interactions` authenticates with
//! one index lookup and no call to the hub.
//!
//! The table is derived from the workspace state the events fold into: [`sync`] runs in the
//! transaction that applies the events, writing what changed between the state before and
//! after. It holds the hash, the workspace and the expiry of each live key (a revoked key
//! leaves the state, and its row goes); never the secret, plain or sealed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shared::domain::workspace::{InteractionKey, Workspace};
use tokio_postgres::Transaction;
use uuid::Uuid;

/// What the table keeps of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    key_hash: Vec<u8>,
    expires_at: Option<DateTime<Utc>>,
}

fn row(key: &InteractionKey) -> Option<Row> {
    // A hash that is not hex cannot match any presented key: it is left out.
    let key_hash = hex::decode(&key.key_hash).ok()?;
    Some(Row { key_hash, expires_at: key.expires_at })
}

fn rows(state: &Workspace) -> BTreeMap<Uuid, Row> {
    if state.deleted {
        return BTreeMap::new();
    }
    state.interaction_keys.iter().filter_map(|(id, key)| Some((*id, row(key)?))).collect()
}

/// Writes the keys that differ between `before` and `after` of each changed workspace (a
/// deleted workspace has none left): one statement per kind of change, however many
/// workspaces.
pub async fn sync<'a>(
    tx: &Transaction<'_>,
    changes: impl IntoIterator<Item = (Uuid, &'a Workspace, &'a Workspace)>,
) -> Result<(), tokio_postgres::Error> {
    let (mut deleted, mut gone) = (Vec::new(), Vec::new());
    let (mut ids, mut hashes, mut workspaces, mut expiries) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (workspace, before, after) in changes {
        if after.deleted {
            deleted.push(workspace);
            continue;
        }
        let (old, new) = (rows(before), rows(after));
        for (id, row) in &old {
            if new.get(id).is_none_or(|r| r.key_hash != row.key_hash) {
                gone.push(*id);
            }
        }
        for (id, row) in new.into_iter().filter(|(id, row)| old.get(id) != Some(row)) {
            ids.push(id);
            hashes.push(row.key_hash);
            workspaces.push(workspace);
            expiries.push(row.expires_at);
        }
    }
    if !deleted.is_empty() {
        tx.execute("DELETE FROM interaction_keys WHERE workspace_id = ANY($1)", &[&deleted]).await?;
    }
    if !gone.is_empty() {
        tx.execute("DELETE FROM interaction_keys WHERE id = ANY($1)", &[&gone]).await?;
    }
    if !ids.is_empty() {
        tx.execute(
            "INSERT INTO interaction_keys (key_hash, id, workspace_id, expires_at) \
             SELECT * FROM unnest($1::bytea[], $2::uuid[], $3::uuid[], $4::timestamptz[]) \
             ON CONFLICT (id) DO UPDATE SET key_hash = excluded.key_hash, workspace_id = excluded.workspace_id, \
             expires_at = excluded.expires_at",
            &[&hashes, &ids, &workspaces, &expiries],
        )
        .await?;
    }
    Ok(())
}

/// The key a presented secret hashes to, with what decides whether it may be used now.
#[derive(Debug, Clone)]
pub struct Found {
    pub id: Uuid,
    pub key_hash: Vec<u8>,
    pub workspace_id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
    pub archived: bool,
    pub webhook_uris: Vec<String>,
}

/// A key with what decides whether it may be used now (a macro, so statements can extend
/// it with `concat!`).
macro_rules! lookup_select {
    () => {
        "SELECT k.id, k.key_hash, k.workspace_id, k.expires_at, \
     coalesce((w.state->>'archived')::boolean, false) AS archived, w.state->'webhook_uris' AS webhook_uris \
     FROM interaction_keys k JOIN workspaces w ON w.id = k.workspace_id AND w.state IS NOT NULL"
    };
}

/// Locks, against concurrent applies until the transaction ends, the live workspaces
/// holding any of the key hashes `$1`, in id order (the order applies lock them in, so
/// neither waits on the other in a cycle), and returns their ids. Applies write a
/// workspace's keys and state only under its row's `FOR UPDATE` lock: once these share
/// locks are held, a statement that starts afterwards reads the keys and state of these
/// workspaces as of the last applied event, and they stay so until the transaction commits.
pub const LOCK_WORKSPACES: &str = "SELECT w.id FROM workspaces w WHERE w.state IS NOT NULL \
     AND w.id IN (SELECT k.workspace_id FROM interaction_keys k WHERE k.key_hash = ANY($1)) \
     ORDER BY w.id FOR SHARE";

/// The keys the hashes `$1` name, with their workspaces' state: run as a statement of its
/// own after [`LOCK_WORKSPACES`] in the same transaction (so it reads what the applies it
/// waited for committed), its rows kept by [`locked_keys`].
pub const LOOKUP_KEYS: &str = concat!(lookup_select!(), " WHERE k.key_hash = ANY($1)");

/// The keys of [`LOOKUP_KEYS`]'s `rows` whose workspaces are among the `locked` rows of
/// [`LOCK_WORKSPACES`]: a hash missing from the answer is no live key of this instance
/// (or a key that reached a workspace after the locks were taken).
pub fn locked_keys(locked: &[tokio_postgres::Row], rows: Vec<tokio_postgres::Row>) -> Vec<Found> {
    let locked: Vec<Uuid> = locked.iter().map(|row| row.get(0)).collect();
    rows.into_iter().map(found).filter(|key| locked.contains(&key.workspace_id)).collect()
}

/// The same look-up for one key, without a lock: a check before the body is read,
/// confirmed by [`LOOKUP_KEYS`] under [`LOCK_WORKSPACES`] in the transaction that stores the interaction.
pub async fn peek(client: &deadpool_postgres::Client, key_hash: &[u8]) -> Result<Option<Found>, tokio_postgres::Error> {
    let statement = client.prepare_cached(concat!(lookup_select!(), " WHERE k.key_hash = $1")).await?;
    Ok(client.query_opt(&statement, &[&key_hash]).await?.map(found))
}

fn found(row: tokio_postgres::Row) -> Found {
    let uris: Option<serde_json::Value> = row.get("webhook_uris");
    Found {
        id: row.get("id"),
        key_hash: row.get("key_hash"),
        workspace_id: row.get("workspace_id"),
        expires_at: row.get("expires_at"),
        archived: row.get("archived"),
        webhook_uris: uris.and_then(|u| serde_json::from_value(u).ok()).unwrap_or_default(),
    }
}

/// The lines the digest of the materialized state takes from this table, in key order.
pub async fn digest_lines(client: &tokio_postgres::Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT key_hash, id, workspace_id, expires_at FROM interaction_keys ORDER BY key_hash", &[])
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let (hash, id, workspace, expires_at): (Vec<u8>, Uuid, Uuid, Option<DateTime<Utc>>) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            format!(
                "ik|{}|{id}|{workspace}|{}\n",
                hex::encode(hash),
                expires_at.map(|t| t.to_rfc3339()).unwrap_or_default()
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::events::workspace::Destination;

    fn key(hash: &str) -> InteractionKey {
        InteractionKey {
            name: "k".into(),
            destination: Destination::App { app_id: Uuid::nil() },
            source_app_id: None,
            key_hash: hash.into(),
            partial_key_hint: "ik_...abcd".into(),
            expires_at: None,
            sealed_secret: Some("sealed".into()),
            secret_claimed: false,
        }
    }

    #[test]
    fn the_rows_of_a_state_hold_hashes_and_none_of_a_deleted_workspace() {
        let mut state = Workspace::default();
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        state.interaction_keys.insert(a, key("0a0b"));
        state.interaction_keys.insert(b, key("ff"));
        state.interaction_keys.insert(c, key("not hex"));
        let rows = rows(&state);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[&a], Row { key_hash: vec![10, 11], expires_at: None });
        assert_eq!(rows[&b].key_hash, vec![255]);
        state.deleted = true;
        assert!(super::rows(&state).is_empty());
    }
}
