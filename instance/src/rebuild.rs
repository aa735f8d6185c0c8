//! `instance rebuild`: drops the materialized state and replays this instance's workspaces
//! from the hubs' feed.
//!
//! The feed is read ahead: a reader task keeps asking for the next pages (several at once,
//! see [`read_feed`]) while the pages already read are applied, so the hub's answers and
//! the instance's writes overlap. The events of many pages (all those read while the
//! previous ones were written, from [`MIN_CHUNK`] up to [`CHUNK`] events) are applied
//! together by the live path's own batch apply ([`crate::keyring::apply_batch_fetching`]:
//! each workspace loaded once, folded in memory with the domain's `apply`, its final state
//! written in one statement for the lot), each transaction with its exact checkpoint. The
//! result is the state the live apply reaches.
//!
//! The reader also asks the hubs for the data keys a page's workspaces need as soon as it
//! has read the page (one request per page, [`KEY_FETCHES`] at once), so the keys arrive
//! while the feed is read instead of holding up the transaction that stores them; and each
//! page's events are checked against their hashes on a thread of their own, so the apply,
//! which runs one chunk at a time, does not wait for the hashing.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use shared::RecordedEvent;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::apply::{DataKeys, Hashes};
use crate::config::Config;
use crate::feed::{HubFeed, PAGE};

/// Most events of this instance applied in one transaction.
const CHUNK: usize = 20_000;
/// Fewest events applied in one transaction while the reading goes on (each transaction
/// writes the state of every workspace it touches once).
const MIN_CHUNK: usize = 2_000;
/// Pages read ahead of the apply (more than a chunk, so reading goes on while one is written).
const READ_AHEAD: usize = 32;
/// Pages asked for at once.
const AT_ONCE: i64 = 4;
/// Requests for data keys sent to the hubs at once while the feed is read.
const KEY_FETCHES: usize = 4;

/// The data keys a page's new workspaces need, being fetched.
type KeyFetch = JoinHandle<anyhow::Result<DataKeys>>;

/// This instance's events of some pages of the feed, being checked against their hashes,
/// with the data keys asked for on their account.
struct Mine {
    events: JoinHandle<Result<Vec<RecordedEvent>, crate::apply::ApplyError>>,
    keys: Option<KeyFetch>,
}

/// Adds a page's events to `chunk` once checked, and its key fetch to `keys`.
async fn take(page: Mine, chunk: &mut Vec<RecordedEvent>, keys: &mut Vec<KeyFetch>) -> anyhow::Result<()> {
    keys.extend(page.keys);
    chunk.extend(page.events.await??);
    Ok(())
}

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
    let reader = tokio::spawn(read_feed(feed.clone(), config.instance_id.clone(), pages));
    // The key fetches of the chunk's pages.
    let mut keys = Vec::new();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut applied = 0;
    // How long each apply waited for pages and their checks: the reading holds up the
    // apply when it is long.
    let mut applied_at = std::time::Instant::now();
    while let Some(page) = read.recv().await {
        take(page, &mut chunk, &mut keys).await?;
        // Whatever else has been read already joins the chunk: the apply takes what the
        // reading gave while it last wrote, so the chunk left when the reading ends is small.
        while chunk.len() < CHUNK {
            match read.try_recv() {
                Ok(page) => take(page, &mut chunk, &mut keys).await?,
                Err(_) => break,
            }
        }
        if chunk.len() >= MIN_CHUNK {
            let (waited, started) = (applied_at.elapsed(), std::time::Instant::now());
            applied += apply(&mut client, &feed, std::mem::take(&mut keys), &chunk).await?;
            tracing::debug!(
                events = chunk.len(),
                waited_ms = waited.as_millis() as u64,
                applied_ms = started.elapsed().as_millis() as u64,
                "rebuild: a chunk applied"
            );
            // Twenty thousand events take a while to free: not on the apply's way.
            let done = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            tokio::task::spawn_blocking(move || drop(done));
            applied_at = std::time::Instant::now();
        }
    }
    // The reader's error, if it stopped on one.
    reader.await??;
    applied += apply(&mut client, &feed, keys, &chunk).await?;
    Ok(applied)
}

/// Sends the feed's pages in order until the end of the log (or the first error).
///
/// Each round asks for [`AT_ONCE`] pages together: the one after the last position read,
/// and pages starting further on, spaced by a little less than the positions a full page
/// spanned last time (over HTTP the feed is the whole log and positions are dense; over
/// NATS it is this instance's events alone). A page is used only when it starts at or
/// before the last position read so far, so it holds every event after it up to its own
/// last one: the events come out complete and in order, the overlap dropped. A page that
/// would leave a hole is dropped, and the next round starts where the reading stopped.
/// Only this instance's events are sent (being checked against their hashes), with the data
/// keys asked for on their account.
async fn read_feed(feed: HubFeed, instance_id: String, pages: mpsc::Sender<Mine>) -> anyhow::Result<()> {
    let mut owned = HashSet::new();
    let mut asked = HashSet::new();
    let fetches = Arc::new(Semaphore::new(KEY_FETCHES));
    let mut after = 0;
    let mut stride = PAGE;
    loop {
        let starts: Vec<i64> = (0..AT_ONCE).map(|k| after + k * stride).collect();
        // Each page read (and parsed) by a task of its own, so pages are parsed in parallel.
        let answers = futures::future::join_all(starts.iter().map(|&start| {
            let feed = feed.clone();
            tokio::spawn(async move { feed.page(start, None).await })
        }))
        .await;
        for (start, page) in starts.into_iter().zip(answers) {
            let page = page??;
            if start > after {
                break;
            }
            if page.is_empty() {
                // Nothing after `start`, so nothing after `after`: the end of the log.
                return Ok(());
            }
            if let (Some(first), Some(last), true) = (page.first(), page.last(), page.len() as i64 == PAGE) {
                stride = ((last.position - first.position) * 9 / 10).max(1);
            }
            let fresh: Vec<RecordedEvent> = page.into_iter().filter(|e| e.position > after).collect();
            let Some(last) = fresh.last().map(|e| e.position) else { continue };
            after = last;
            let events = mine(fresh, &instance_id, &mut owned);
            // Each workspace's key is asked for once, after its creation (a later secret's
            // issue finds it kept).
            let ids: Vec<Uuid> = events
                .iter()
                .filter(|e| crate::keyring::needs_key(e))
                .filter_map(crate::apply::workspace_id)
                .filter(|id| asked.insert(*id))
                .collect();
            let keys = (!ids.is_empty()).then(|| {
                let (feed, fetches) = (feed.clone(), fetches.clone());
                tokio::spawn(async move {
                    let _permit = fetches.acquire_owned().await?;
                    crate::keyring::fetch_keys(&feed, ids).await
                })
            });
            let events = tokio::task::spawn_blocking(move || crate::apply::check_hashes(&events).map(|()| events));
            if pages.send(Mine { events, keys }).await.is_err() {
                // The apply stopped (on an error of its own, which it reports).
                return Ok(());
            }
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
/// has no gaps. The data keys it needs come from `keys`, the fetches the reader started
/// for the chunk's pages, and any other from the hubs at once.
async fn apply(
    client: &mut tokio_postgres::Client,
    feed: &HubFeed,
    keys: Vec<KeyFetch>,
    events: &[RecordedEvent],
) -> anyhow::Result<i64> {
    if events.is_empty() {
        return Ok(0);
    }
    let fetch = |wanted: Vec<Uuid>| async move {
        let mut found = DataKeys::with_capacity(wanted.len());
        for fetch in keys {
            found.extend(fetch.await??);
        }
        let rest: Vec<Uuid> = wanted.into_iter().filter(|id| !found.contains_key(id)).collect();
        if !rest.is_empty() {
            found.extend(crate::keyring::fetch_keys(feed, rest).await?);
        }
        Ok(found)
    };
    let (handled, _) = crate::keyring::apply_batch_fetching(client, events, Hashes::Checked, fetch).await?;
    anyhow::ensure!(handled == events.len(), "the hub's feed skipped events of a workspace");
    Ok(handled as i64)
}
