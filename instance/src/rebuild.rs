//! `instance rebuild`: drops the materialized state and replays this instance's workspaces
//! from the hubs' feed.
//!
//! The feed is read ahead: a reader task keeps asking for the next page while the pages
//! already read are applied, so the hub's answers and the instance's writes overlap. The
//! events of many pages are applied together by the live path's own batch apply
//! ([`crate::keyring::apply_batch`]: each workspace loaded once, folded in memory with the
//! domain's `apply`, its final state written in one statement for the lot, the data keys
//! its new workspaces need fetched several at once), in transactions of up to [`CHUNK`]
//! events, each with its exact checkpoint. The result is the state the live apply reaches.

use std::collections::HashSet;

use anyhow::Context;
use shared::RecordedEvent;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::Config;
use crate::feed::HubFeed;

/// Most events of this instance applied in one transaction.
const CHUNK: usize = 20_000;
/// Pages read ahead of the apply.
const READ_AHEAD: usize = 16;

/// Replays this instance's workspaces; returns how many events were applied.
pub async fn rebuild(config: Config) -> anyhow::Result<i64> {
    let mut client = config.connect().await.context("connecting to the instance database")?;
    crate::migrate::run(&mut client).await?;
    let feed = HubFeed::new(&config)?;
    client
        .batch_execute(
            "TRUNCATE workspaces, data_keys, interaction_keys; UPDATE instance_state SET applied_position = 0",
        )
        .await?;
    let (pages, mut read) = mpsc::channel(READ_AHEAD);
    let reader = tokio::spawn(read_feed(feed.clone(), pages));
    let mut owned = HashSet::new();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut applied = 0;
    while let Some(page) = read.recv().await {
        chunk.extend(mine(page, &config.instance_id, &mut owned));
        if chunk.len() >= CHUNK {
            applied += apply(&mut client, &feed, &chunk).await?;
            chunk.clear();
        }
    }
    // The reader's error, if it stopped on one.
    reader.await??;
    applied += apply(&mut client, &feed, &chunk).await?;
    Ok(applied)
}

/// Sends the feed's pages in order until the end of the log (or the first error).
async fn read_feed(feed: HubFeed, pages: mpsc::Sender<Vec<RecordedEvent>>) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let page = feed.page(after, None).await?;
        let Some(last) = page.last().map(|e| e.position) else { return Ok(()) };
        after = last;
        if pages.send(page).await.is_err() {
            // The apply stopped (on an error of its own, which it reports).
            return Ok(());
        }
    }
}

/// The events of `page` that belong to this instance's workspaces (a workspace is this
/// instance's once its creation names it).
fn mine(page: Vec<RecordedEvent>, instance_id: &str, owned: &mut HashSet<Uuid>) -> Vec<RecordedEvent> {
    let mut mine = Vec::with_capacity(page.len());
    for event in page {
        let Some(id) = crate::apply::workspace_id(&event) else { continue };
        if event.event_type == "WorkspaceCreated"
            && event.data.get("instance_id").and_then(|v| v.as_str()) == Some(instance_id)
        {
            owned.insert(id);
        }
        if owned.contains(&id) {
            mine.push(event);
        }
    }
    mine
}

/// Applies one chunk in one transaction; the feed is the whole log in order, so a replay
/// has no gaps.
async fn apply(client: &mut tokio_postgres::Client, feed: &HubFeed, events: &[RecordedEvent]) -> anyhow::Result<i64> {
    if events.is_empty() {
        return Ok(0);
    }
    let (handled, _) = crate::keyring::apply_batch(client, feed, events).await?;
    anyhow::ensure!(handled == events.len(), "the hub's feed skipped events of a workspace");
    Ok(handled as i64)
}
