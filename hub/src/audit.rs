//! Operator tools over the log: verify the hash chain, export it.

use std::io::Write;

use shared::hash::GENESIS_HASH;
use tokio_postgres::GenericClient;

use crate::store::ReadError;

const PAGE: i64 = 1000;

/// Why the chain is broken, at which position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub position: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub events: i64,
    pub head_hash: Vec<u8>,
}

/// Walks the whole log checking positions are dense, each `prev_hash` is the previous
/// event's `hash`, each `hash` matches the event's content, and the head row agrees.
pub async fn verify(client: &impl GenericClient) -> Result<Result<Verified, ChainBreak>, ReadError> {
    let mut expected_position = 1_i64;
    let mut prev_hash = GENESIS_HASH.to_vec();
    loop {
        let page = crate::store::read_page(client, expected_position - 1, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for event in &page {
            let broken = |reason: &str| Err(ChainBreak { position: expected_position, reason: reason.into() });
            if event.position != expected_position {
                return Ok(broken(&format!("found position {} where {} belongs", event.position, expected_position)));
            }
            if event.prev_hash != prev_hash {
                return Ok(broken("prev_hash differs from the previous event's hash"));
            }
            if !event.hash_is_valid() {
                return Ok(broken("hash does not match the event's content"));
            }
            prev_hash.clone_from(&event.hash);
            expected_position += 1;
        }
    }
    let events = expected_position - 1;
    let head = client.query_one("SELECT position, hash FROM event_log_head", &[]).await?;
    let (head_position, head_hash): (i64, Vec<u8>) = (head.try_get("position")?, head.try_get("hash")?);
    if head_position != events || head_hash != prev_hash {
        return Ok(Err(ChainBreak {
            position: events + 1,
            reason: format!("the log ends at position {events} but its head says {head_position}"),
        }));
    }
    Ok(Ok(Verified { events, head_hash: prev_hash }))
}

/// Writes every event after `after` as one JSON object per line.
pub async fn export_jsonl(client: &impl GenericClient, after: i64, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut last = after;
    let mut written = 0;
    loop {
        let page = crate::store::read_page(client, last, PAGE).await?;
        let Some(tail) = page.last() else { break };
        last = tail.position;
        for event in &page {
            serde_json::to_writer(&mut *out, event)?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
    out.flush()?;
    Ok(written)
}
