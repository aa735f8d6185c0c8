//! Deleting workspaces and organizations, with what must go with them, in one commit
//! across aggregate types.
//!
//! A workspace delete (a cascade's whole subtree) also revokes every admin key restricted
//! only to deleted workspaces and removes them from keys restricted to others too; an
//! organization delete revokes every key of the organization and deletes every workspace
//! of it. Either way the workspaces' data keys are shredded in the same transaction, and
//! the instances drop the workspaces when the `WorkspaceDeleted` events reach them. All of
//! it is events appended atomically: there is never a moment in the log where a deleted
//! workspace still has a key restricted to it.

use shared::Metadata;
use shared::domain::api_key::{ApiKey, ApiKeyCommand, Grantor};
use shared::domain::organization::{Organization, OrganizationCommand};
use shared::domain::workspace::{Workspace, WorkspaceCommand};
use shared::domain::{Aggregate, DomainError};
use uuid::Uuid;

use crate::commands::{encode, idempotency_mark, load_all};
use crate::http::error::ApiError;
use crate::store::{AppendError, Commit, EventStore, ExpectedVersion, StreamAppend};

const ATTEMPTS: usize = 5;
/// Class of the advisory lock held while an organization is being deleted (V12).
const DELETING_ORGANIZATION: i32 = 1212;

/// Deletes the workspaces `ids` (a subtree, root first; `if_match` pins the root).
pub async fn delete_workspaces(
    store: &EventStore,
    ids: &[Uuid],
    if_match: Option<i64>,
    metadata: &Metadata,
) -> Result<(), ApiError> {
    run(store, metadata, || async {
        let mut appends = Vec::new();
        let workspaces = load_many::<Workspace>(store, ids).await?;
        if let (Some(expected), Some((_, _, version))) = (if_match, workspaces.first())
            && expected != *version
        {
            return Err(ApiError::PreconditionFailed);
        }
        decide_each(&workspaces, |w| w.decide(WorkspaceCommand::Delete), metadata, &mut appends)?;
        let keys = load_many::<ApiKey>(store, &restricted_keys(store, ids).await?).await?;
        let deleted = ids.to_vec();
        decide_each(
            &keys,
            |k| k.decide(ApiKeyCommand::RemoveWorkspaces { deleted: deleted.clone() }),
            metadata,
            &mut appends,
        )?;
        Ok(Commit { appends, extra: vec![crate::secrets::shred(ids)] })
    })
    .await
}

/// Deletes organization `id`: its keys are revoked and its workspaces deleted.
pub async fn delete_organization(
    store: &EventStore,
    id: Uuid,
    if_match: Option<i64>,
    metadata: &Metadata,
) -> Result<(), ApiError> {
    // A connection of its own, out of the pool: if this request is dropped midway, the
    // session ends and the lock with it.
    let guard = deadpool_postgres::Object::take(store.pool().get().await?);
    guard.execute("SELECT pg_advisory_lock($1, hashtext($2::uuid::text))", &[&DELETING_ORGANIZATION, &id]).await?;
    let deleted = run(store, metadata, || async {
        let mut appends = Vec::new();
        let organization = load_many::<Organization>(store, &[id]).await?;
        if let (Some(expected), Some((_, _, version))) = (if_match, organization.first())
            && expected != *version
        {
            return Err(ApiError::PreconditionFailed);
        }
        decide_each(&organization, |o| o.decide(OrganizationCommand::Delete), metadata, &mut appends)?;
        let client = store.pool().get().await?;
        let workspace_ids: Vec<Uuid> = client
            .query("SELECT id FROM workspaces WHERE organization_id = $1 AND status <> 'deleted'", &[&id])
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        let key_ids: Vec<Uuid> = client
            .query("SELECT id FROM api_keys WHERE organization_id = $1 AND revoked_at IS NULL", &[&id])
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        drop(client);
        let workspaces = load_many::<Workspace>(store, &workspace_ids).await?;
        decide_each(&workspaces, |w| w.decide(WorkspaceCommand::Delete), metadata, &mut appends)?;
        let keys = load_many::<ApiKey>(store, &key_ids).await?;
        let revoke = ApiKeyCommand::Revoke { grantor: Grantor::operator(), ancestry: Default::default() };
        decide_each(&keys, |k| k.decide(revoke.clone()), metadata, &mut appends)?;
        Ok(Commit { appends, extra: vec![crate::secrets::shred(&workspace_ids)] })
    })
    .await;
    // Released at once for the creates that come next; should that fail, dropping the
    // connection ends the session and releases it anyway.
    let unlock = "SELECT pg_advisory_unlock($1, hashtext($2::uuid::text))";
    if let Err(error) = guard.execute(unlock, &[&DELETING_ORGANIZATION, &id]).await {
        tracing::warn!(%error, "releasing the organization deletion lock");
    }
    deleted
}

/// Plans and commits; a concurrent change to any stream makes it plan again on the new
/// state (the plan answers 412 when the version the client pinned is gone).
pub(crate) async fn run<F, Fut>(store: &EventStore, metadata: &Metadata, plan: F) -> Result<(), ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Commit, ApiError>>,
{
    for _ in 0..ATTEMPTS {
        let mut commit = plan().await?;
        if commit.appends.is_empty() {
            return Ok(());
        }
        commit.extra.extend(idempotency_mark(metadata));
        match store.commit(commit).await {
            Ok(_) => return Ok(()),
            // Planning again checks the pinned version: a change elsewhere (a key rotated
            // meanwhile) is no reason for a 412.
            Err(AppendError::Conflict { .. }) => continue,
            // A key restricted to a deleted workspace, a workspace or key of the deleted
            // organization, or an interaction key of the deleted app was created meanwhile:
            // plan again.
            Err(error)
                if matches!(
                    error.constraint(),
                    Some("api_keys_workspaces_live" | "organizations_live" | "apps_live")
                ) =>
            {
                continue;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(ApiError::Conflict {
        code: "concurrent_modification",
        detail: "the resources changed concurrently; retry".into(),
    })
}

/// Live admin keys restricted to any of `workspace_ids`.
async fn restricted_keys(store: &EventStore, workspace_ids: &[Uuid]) -> Result<Vec<Uuid>, ApiError> {
    let client = store.pool().get().await?;
    let rows = client
        .query("SELECT id FROM api_keys WHERE workspace_ids && $1 AND revoked_at IS NULL", &[&workspace_ids])
        .await?;
    Ok(rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?)
}

/// Each aggregate with its id and stream version, in the order of `ids`.
pub(crate) async fn load_many<A: Aggregate>(store: &EventStore, ids: &[Uuid]) -> Result<Vec<(Uuid, A, i64)>, ApiError> {
    let loaded = load_all::<A>(store, ids).await?;
    Ok(ids.iter().zip(loaded).map(|(id, (state, version))| (*id, state, version)).collect())
}

/// Adds each aggregate's events to `appends`, expecting the version it was loaded at.
pub(crate) fn decide_each<A: Aggregate>(
    loaded: &[(Uuid, A, i64)],
    decide: impl Fn(&A) -> Result<Vec<A::Event>, DomainError>,
    metadata: &Metadata,
    appends: &mut Vec<StreamAppend>,
) -> Result<(), ApiError> {
    for (id, state, version) in loaded {
        let events = decide(state)?;
        if !events.is_empty() {
            appends.push(StreamAppend {
                stream_id: A::stream_id(*id),
                expected: ExpectedVersion::Exact(*version),
                events: encode(&events, metadata)?,
            });
        }
    }
    Ok(())
}
