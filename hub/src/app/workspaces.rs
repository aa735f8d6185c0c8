//! Workspace commands: create, change, archive, restore and delete. The rules that need
//! other aggregates (the organization, the parent) read them through the cache; the tree's
//! own rules (sibling names, depth, a live and active parent, no live child under a deleted
//! workspace, no cycle) are constraints checked in the append transaction, so a cached
//! parent that another hub has just changed cannot slip a workspace past them.

use chrono::Utc;
use shared::RecordedEvent;
use shared::domain::organization::Organization;
use shared::domain::workspace::{NewWorkspace, Workspace, WorkspaceChanges, WorkspaceCommand};
use shared::domain::{Aggregate, DomainError};
use shared::events::workspace::PublicKey;
use shared::keys::GeneratedKey;
use shared::scope::Scope;
use uuid::Uuid;

use super::cache::Loaded;
use super::load;
use crate::commands;
use crate::http::AppState;
use crate::http::auth::Principal;
use crate::http::context::Ctx;
use crate::http::error::ApiError;
use crate::http::sql::Filter;
use crate::http::visibility::Table;

/// What a create request asks for.
pub struct Create {
    pub name: String,
    pub organization_id: Option<Uuid>,
    pub parent_id: Option<Uuid>,
    pub instance_id: Option<String>,
    pub settings: Option<serde_json::Value>,
    pub webhook_uris: Option<Vec<String>>,
    pub public_keys: Option<Vec<PublicKey>>,
}

/// A created workspace and its first signing secret (shown once).
pub struct Created {
    pub id: Uuid,
    pub workspace: Loaded<Workspace>,
    pub secret: GeneratedKey,
}

pub async fn create(state: &AppState, ctx: &Ctx, request: Create) -> Result<Created, ApiError> {
    ctx.principal.require(Scope::WorkspacesWrite)?;
    let organization_id = organization(state, &ctx.principal, request.organization_id).await?;
    if let Some(instance) = &request.instance_id {
        shared::domain::values::instance_id("instance_id", instance)?;
    }
    match request.parent_id {
        Some(parent_id) => check_parent(state, &ctx.principal, organization_id, parent_id, true).await?,
        None if ctx.principal.workspace_roots().is_some() => {
            return Err(ApiError::Forbidden(
                "a key restricted to workspaces creates workspaces only inside them".into(),
            ));
        }
        None => {}
    }
    let instance_id = match request.instance_id.or_else(|| state.config.default_instance_id.clone()) {
        Some(instance) => instance,
        None => state.placement.place(&state.pool).await?.ok_or(ApiError::Conflict {
            code: "no_instance",
            detail: "no instance has reported in the last 30 s to place the workspace on: name an instance_id".into(),
        })?,
    };
    let id = Uuid::now_v7();
    let new = NewWorkspace {
        id,
        organization_id,
        parent_id: request.parent_id,
        instance_id: Some(instance_id),
        name: request.name,
        settings: request.settings,
        webhook_uris: request.webhook_uris,
        public_keys: request.public_keys,
    };
    let (data_key, sealed_data_key) = crate::secrets::new_data_key(&state.master_key, id);
    let (secret, sealed_secret) = crate::secrets::new_secret(&data_key, id, 1);
    let now = Utc::now();
    // A new id: the stream cannot exist, so there is nothing to read.
    let done = commands::run::<Workspace>(&state.store, id, load::fresh(), None, &ctx.metadata, |w| {
        let mut events = w.decide(WorkspaceCommand::Create(Box::new(new.clone())))?;
        let mut created = w.clone();
        events.iter().for_each(|e| created.apply(e));
        events.extend(created.decide(WorkspaceCommand::IssueSecret {
            version: 1,
            sealed_secret: sealed_secret.clone(),
            grace_period: chrono::Duration::zero(),
            now,
        })?);
        Ok((events, vec![crate::secrets::keyring_row(id, &sealed_data_key)]))
    })
    .await?;
    Ok(Created { id, workspace: done.loaded, secret })
}

/// What a change request asks for (`parent_id: Some(None)` moves to the root).
pub struct Update {
    pub changes: WorkspaceChanges,
    pub parent_id: Option<Option<Uuid>>,
}

pub async fn update(state: &AppState, ctx: &Ctx, id: Uuid, request: Update) -> Result<Loaded<Workspace>, ApiError> {
    ctx.principal.require(Scope::WorkspacesWrite)?;
    let current = visible(state, &ctx.principal, id).await?;
    if let Some(new_parent) = request.parent_id {
        match new_parent {
            // Under an archived parent, the move is refused at commit (`workspaces_parent_active`).
            Some(parent_id) => {
                check_parent(state, &ctx.principal, current.state.organization_id, parent_id, false).await?;
            }
            None if ctx.principal.workspace_roots().is_some() => {
                return Err(ApiError::Forbidden("a key restricted to workspaces cannot make a root workspace".into()));
            }
            None => {}
        }
    }
    let Update { changes, parent_id } = request;
    let done = commands::run::<Workspace>(&state.store, id, current, ctx.if_match, &ctx.metadata, |w| {
        let mut events = w.decide(WorkspaceCommand::Update(changes.clone()))?;
        if let Some(parent_id) = parent_id {
            events.extend(w.decide(WorkspaceCommand::Move { id, parent_id })?);
        }
        Ok((events, Vec::new()))
    })
    .await?;
    Ok(done.loaded)
}

/// Archives a workspace and its whole subtree in one commit; returns the root as decided.
pub async fn archive(state: &AppState, ctx: &Ctx, id: Uuid) -> Result<Loaded<Workspace>, ApiError> {
    ctx.principal.require(Scope::WorkspacesWrite)?;
    let root = visible(state, &ctx.principal, id).await?;
    change_subtree(state, ctx, root, id, WorkspaceCommand::Archive).await
}

/// Restores an archived workspace and its whole subtree in one commit; returns the root as
/// decided. An archived parent must be restored first: that is read from the parent's
/// aggregate here, and a parent archived meanwhile by another hub is refused at commit
/// (`workspaces_parent_active`).
pub async fn restore(state: &AppState, ctx: &Ctx, id: Uuid) -> Result<Loaded<Workspace>, ApiError> {
    ctx.principal.require(Scope::WorkspacesWrite)?;
    let root = visible(state, &ctx.principal, id).await?;
    if let Some(parent_id) = root.state.parent_id {
        let mut parent = load::load::<Workspace>(&state.store, parent_id).await?;
        if parent.state.archived {
            // A refusal stands only on the log's latest state, not on a cached one.
            parent = load::refresh(&state.store, parent_id, parent).await?;
        }
        if parent.state.archived {
            return Err(ApiError::Conflict {
                code: "parent_archived",
                detail: "restore the parent workspace first".into(),
            });
        }
    }
    change_subtree(state, ctx, root, id, WorkspaceCommand::Restore).await
}

/// Deletes a workspace; with `cascade`, its whole subtree (else live children are a 409
/// `has_children`, and a child created meanwhile is refused at commit by
/// `workspaces_parent_live`). See [`crate::deletion::delete_workspaces`] for what goes
/// with it.
pub async fn delete(state: &AppState, ctx: &Ctx, id: Uuid, cascade: bool) -> Result<(), ApiError> {
    ctx.principal.require(Scope::WorkspacesWrite)?;
    visible(state, &ctx.principal, id).await?;
    let ids = subtree_ids(state, id).await?;
    if ids.len() > 1 && !cascade {
        return Err(ApiError::Conflict {
            code: "has_children",
            detail: "the workspace has live children: delete them first or pass cascade=true".into(),
        });
    }
    crate::deletion::delete_workspaces(&state.store, &ids, ctx.if_match, &ctx.metadata).await
}

/// Applies `command` to the workspace `root` and every live descendant, in one commit;
/// returns the root after it.
async fn change_subtree(
    state: &AppState,
    ctx: &Ctx,
    root: Loaded<Workspace>,
    id: Uuid,
    command: WorkspaceCommand,
) -> Result<Loaded<Workspace>, ApiError> {
    let ids = subtree_ids(state, id).await?;
    let recorded = commands::execute_all::<Workspace>(
        &state.store,
        &ids,
        ctx.if_match,
        &ctx.metadata,
        |_, w| w.decide(command.clone()),
        Vec::new,
    )
    .await?;
    decided(state, id, root, &recorded).await
}

/// The aggregate `id` after a commit that recorded `recorded`: `loaded` advanced by the
/// commit's events when they follow it, else (another hub wrote in between, or the commit
/// was a no-op decided on the log's state) caught up from the log.
async fn decided(
    state: &AppState,
    id: Uuid,
    mut loaded: Loaded<Workspace>,
    recorded: &[RecordedEvent],
) -> Result<Loaded<Workspace>, ApiError> {
    let stream_id = Workspace::stream_id(id);
    let own: Vec<RecordedEvent> = recorded.iter().filter(|e| e.stream_id == stream_id).cloned().collect();
    match own.first() {
        Some(first) if first.stream_version == loaded.version + 1 => {
            loaded.advance(&own)?;
            Ok(loaded)
        }
        _ => load::refresh(&state.store, id, loaded).await,
    }
}

/// The live workspaces of a subtree, root first (from the tree's read model, which holds
/// the ancestor paths).
async fn subtree_ids(state: &AppState, id: Uuid) -> Result<Vec<Uuid>, ApiError> {
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT id FROM workspaces WHERE ancestors @> ARRAY[$1::uuid] AND status <> 'deleted' \
             ORDER BY cardinality(ancestors), id",
            &[&id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?)
}

/// The organization a create goes to: the key's own, or the one the operator names.
async fn organization(state: &AppState, principal: &Principal, requested: Option<Uuid>) -> Result<Uuid, ApiError> {
    match (principal.organization_id(), requested) {
        (Some(own), None) => Ok(own),
        (Some(own), Some(requested)) if own == requested => Ok(own),
        (Some(_), Some(_)) => Err(ApiError::NotFound("organization")),
        (None, Some(requested)) => {
            // A deletion racing this create is refused at commit (`organizations_live`).
            let organization = load::load::<Organization>(&state.store, requested).await?;
            if !organization.state.exists || organization.state.deleted {
                return Err(ApiError::invalid("organization_id", "exists", "no such organization"));
            }
            Ok(requested)
        }
        (None, None) => {
            Err(ApiError::invalid("organization_id", "required", "the operator must name the organization"))
        }
    }
}

/// The workspace, if the principal may see it (else 404).
pub(crate) async fn visible(state: &AppState, principal: &Principal, id: Uuid) -> Result<Loaded<Workspace>, ApiError> {
    let workspace = load::load::<Workspace>(&state.store, id).await?;
    let w = &workspace.state;
    if !w.exists || w.deleted || !principal.sees_organization(w.organization_id) {
        return Err(ApiError::NotFound("workspace"));
    }
    if principal.workspace_roots().is_some() && !within(state, principal, id).await? {
        return Err(ApiError::NotFound("workspace"));
    }
    Ok(workspace)
}

/// Whether the principal sees the workspace in the tree's read model (for a key
/// restricted to subtrees: ancestor paths change with moves of any ancestor, which no
/// cached state follows).
async fn within(state: &AppState, principal: &Principal, id: Uuid) -> Result<bool, ApiError> {
    let mut filter = Filter::default();
    filter.bind("w.id = $?", Box::new(id));
    filter.visible_to(principal, Table::Workspaces);
    let client = state.pool.get().await?;
    let row = client.query_opt(&format!("SELECT 1 FROM workspaces w {}", filter.where_sql()), &filter.params()).await?;
    Ok(row.is_some())
}

/// A parent named in a request: visible to the caller, of the same organization, live
/// (and active, when `refuse_archived`). Depth and cycles are the append transaction's to
/// judge.
async fn check_parent(
    state: &AppState,
    principal: &Principal,
    organization_id: Uuid,
    parent_id: Uuid,
    refuse_archived: bool,
) -> Result<(), ApiError> {
    let no_parent = || ApiError::invalid("parent_id", "exists", "no such parent workspace");
    let parent = visible(state, principal, parent_id).await.map_err(|_| no_parent())?;
    if parent.state.organization_id != organization_id {
        return Err(no_parent());
    }
    if refuse_archived && parent.state.archived {
        // A refusal stands only on the log's latest state: the parent may have been
        // restored through another hub.
        let parent = load::refresh(&state.store, parent_id, parent).await?;
        if parent.state.archived {
            return Err(DomainError::conflict("parent_archived", "the parent workspace is archived").into());
        }
    }
    Ok(())
}
