//! Answers instances over NATS (core request/reply, queue group `hubs`): their workspaces'
//! sealed data keys, pages of their events, their heartbeats, their usage reports, and
//! their durable consumers.
//!
//! Every hub of a multi-instance deployment runs this, so any live hub answers and no
//! instance depends on one hub process. The subject `hub.link.<instance_id>.<op>` names
//! the asker (NATS permissions let an instance publish only under its own id), and a hub
//! answers only about workspaces placed on that instance: one instance's credentials reach
//! no other instance's tenants.

use std::time::Duration;

use async_nats::jetstream;
use deadpool_postgres::Pool;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::RecordedEvent;
use shared::domain::Aggregate;
use shared::domain::workspace::Workspace;
use shared::link::{
    self, DataKey, DataKeyRequest, DataKeysReply, DataKeysRequest, EventsRequest, Heartbeat, HeartbeatReply, LinkError,
    Op, UsageReport,
};

/// Requests answered at once by one hub.
const CONCURRENCY: usize = 16;
/// The most events one page holds (as the HTTP feed).
const MAX_PAGE: i64 = shared::feed::MAX_LIMIT;
/// Room left in a NATS message for the reply's framing.
const MARGIN: usize = 4096;
const RETRY: Duration = Duration::from_secs(1);

/// Answers link requests until the process ends, reconnecting after failures.
pub fn spawn(pool: Pool, nats_url: String) {
    tokio::spawn(async move {
        loop {
            if let Err(error) = serve(&pool, &nats_url).await {
                tracing::warn!(error = %format!("{error:#}"), "link to the instances interrupted; retrying");
            }
            tokio::time::sleep(RETRY).await;
        }
    });
}

/// A NATS connection with the credentials `nats_url` carries (`nats://user:password@…`).
pub async fn connect(nats_url: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let (url, credentials) = link::split_credentials(nats_url);
    match credentials {
        Some((user, password)) => async_nats::ConnectOptions::with_user_and_password(user, password).connect(url).await,
        None => async_nats::connect(url).await,
    }
}

async fn serve(pool: &Pool, nats_url: &str) -> anyhow::Result<()> {
    let nats = connect(nats_url).await?;
    let requests = nats.queue_subscribe(link::SUBSCRIPTION, link::QUEUE.to_owned()).await?;
    tracing::info!("answering instances on {}", link::SUBSCRIPTION);
    let js = jetstream::new(nats.clone());
    requests
        .for_each_concurrent(CONCURRENCY, |request| {
            let (nats, js) = (nats.clone(), js.clone());
            async move {
                let Some(reply_to) = request.reply.clone() else { return };
                let max = nats.server_info().max_payload.saturating_sub(MARGIN);
                let body = answer(pool, &js, &request.subject, &request.payload, max).await;
                if let Err(error) = nats.publish(reply_to, body.into()).await {
                    tracing::warn!(%error, "a link reply was not sent");
                }
            }
        })
        .await;
    anyhow::bail!("the link subscription ended")
}

fn reply<T: Serialize>(reply: link::Reply<T>) -> Vec<u8> {
    serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"Err\":{\"code\":\"unavailable\",\"detail\":\"\"}}".to_vec())
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, LinkError> {
    serde_json::from_slice(payload).map_err(|error| LinkError::new("bad_request", error.to_string()))
}

fn unavailable(error: impl std::fmt::Display) -> LinkError {
    tracing::warn!(%error, "a link request failed");
    LinkError::new("unavailable", "the hub cannot answer now; ask again")
}

fn not_placed() -> LinkError {
    LinkError::new("not_placed_here", "no such workspace on this instance")
}

/// The JSON reply to one request.
async fn answer(pool: &Pool, js: &jetstream::Context, subject: &str, payload: &[u8], max_bytes: usize) -> Vec<u8> {
    let Some((instance, op)) = link::parse_subject(subject) else {
        return reply::<()>(Err(LinkError::new("bad_request", "unknown operation")));
    };
    if shared::domain::values::instance_id("instance_id", instance).is_err() {
        return reply::<()>(Err(LinkError::new("bad_request", "not an instance id")));
    }
    match op {
        Op::DataKey => reply(data_key(pool, instance, payload).await),
        Op::DataKeys => reply(data_keys(pool, instance, payload).await),
        Op::Events => reply(events(pool, instance, payload, max_bytes).await),
        Op::Heartbeat => reply(heartbeat(pool, instance, payload).await),
        Op::Consumer => reply(ensure_consumer(js, instance).await),
        Op::Usage => reply(usage(pool, instance, payload).await),
    }
}

/// Adds an instance's usage report to the counters, once per report id (a report sent
/// again after a lost reply is acknowledged without counting twice).
async fn usage(pool: &Pool, instance: &str, payload: &[u8]) -> Result<(), LinkError> {
    let report: UsageReport = parse(payload)?;
    let mut client = pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    instance::usage::apply_report(&tx, instance, &report).await.map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(())
}

async fn data_key(pool: &Pool, instance: &str, payload: &[u8]) -> Result<DataKey, LinkError> {
    let request: DataKeyRequest = parse(payload)?;
    let client = pool.get().await.map_err(unavailable)?;
    let row = client
        .query_opt(
            "SELECT k.sealed_data_key FROM keyring k JOIN workspaces w ON w.id = k.workspace_id \
             WHERE k.workspace_id = $1 AND w.instance_id = $2",
            &[&request.workspace_id, &instance],
        )
        .await
        .map_err(unavailable)?
        .ok_or_else(not_placed)?;
    let sealed: Option<Vec<u8>> = row.get(0);
    Ok(DataKey { workspace_id: request.workspace_id, sealed_data_key: sealed.map(hex::encode) })
}

/// The data keys of the asked workspaces that are placed on `instance`; the others are
/// left out of the reply, as if unknown.
async fn data_keys(pool: &Pool, instance: &str, payload: &[u8]) -> Result<DataKeysReply, LinkError> {
    let request: DataKeysRequest = parse(payload)?;
    if !(1..=link::MAX_DATA_KEYS).contains(&request.workspace_ids.len()) {
        return Err(LinkError::new("bad_request", format!("ask for 1 to {} workspaces", link::MAX_DATA_KEYS)));
    }
    let client = pool.get().await.map_err(unavailable)?;
    let rows = client
        .query(
            "SELECT k.workspace_id, k.sealed_data_key FROM keyring k JOIN workspaces w ON w.id = k.workspace_id \
             WHERE k.workspace_id = ANY($1) AND w.instance_id = $2",
            &[&request.workspace_ids, &instance],
        )
        .await
        .map_err(unavailable)?;
    Ok(DataKeysReply { items: rows.iter().map(crate::secrets::data_key_item).collect() })
}

async fn events(
    pool: &Pool,
    instance: &str,
    payload: &[u8],
    max_bytes: usize,
) -> Result<Vec<RecordedEvent>, LinkError> {
    let request: EventsRequest = parse(payload)?;
    if request.after < 0 || !(1..=MAX_PAGE).contains(&request.limit) {
        return Err(LinkError::new("bad_request", format!("after must be 0 or more, limit 1 to {MAX_PAGE}")));
    }
    let client = pool.get().await.map_err(unavailable)?;
    let events = match &request.stream_id {
        Some(stream) => {
            let id = Workspace::id_of_stream(stream).ok_or_else(not_placed)?;
            let placed = client
                .query_opt("SELECT 1 FROM workspaces WHERE id = $1 AND instance_id = $2", &[&id, &instance])
                .await
                .map_err(unavailable)?;
            placed.ok_or_else(not_placed)?;
            crate::store::read_stream_page(&**client, stream, request.after, request.limit).await
        }
        None => crate::store::read_placed_page(&**client, instance, request.after, request.limit).await,
    }
    .map_err(unavailable)?;
    // A page is one NATS message: it ends before the server's `max_payload`.
    let mut page = Vec::with_capacity(events.len());
    let mut bytes = 0;
    for event in events {
        bytes += serde_json::to_vec(&event).map_or(usize::MAX, |json| json.len() + 1);
        if bytes > max_bytes {
            break;
        }
        page.push(event);
    }
    if page.is_empty() && bytes > max_bytes {
        return Err(LinkError::new("too_large", "the next event does not fit in a NATS message"));
    }
    Ok(page)
}

async fn heartbeat(pool: &Pool, instance: &str, payload: &[u8]) -> Result<HeartbeatReply, LinkError> {
    let beat: Heartbeat = parse(payload)?;
    let client = pool.get().await.map_err(unavailable)?;
    crate::http::instances::record(&**client, instance, beat.applied_position, beat.workspace_count)
        .await
        .map_err(|_| LinkError::new("unavailable", "the heartbeat was not recorded"))
}

/// The instance's durable pull consumer, filtered on its own subjects. Hubs create it:
/// an instance may read its consumer but not define (or re-point) one.
async fn ensure_consumer(js: &jetstream::Context, instance: &str) -> Result<(), LinkError> {
    let stream = js.get_stream(shared::relayed::STREAM).await.map_err(unavailable)?;
    let name = link::consumer_name(instance);
    stream.get_or_create_consumer(&name, instance::consumer::config(instance)).await.map_err(unavailable)?;
    Ok(())
}
