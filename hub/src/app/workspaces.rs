//! Workspace commands: create and change. The rules that need other aggregates (the
//! organization, the parent) read them through the cache; the tree's own rules (sibling
//! names, depth, a live and active parent, no cycle) are constraints checked in the append
//! transaction, so a cached parent that another hub has just changed cannot slip a
//! workspace past them.

use chrono::Utc;
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
        shared::domain::values::token("instance_id", instance)?;
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
async fn visible(state: &AppState, principal: &Principal, id: Uuid) -> Result<Loaded<Workspace>, ApiError> {
    let workspace = load::load::<Workspace>(&state.store, id).await?;
    let w = &workspace.state;
    if !w.exists || w.deleted || !principal.sees_organization(w.organization_id) {
        return Err(ApiError::NotFound("workspace"));
    }
    if let Some(roots) = principal.workspace_roots()
        && !within(state, id, roots).await?
    {
        return Err(ApiError::NotFound("workspace"));
    }
    Ok(workspace)
}

/// Whether a workspace lies in one of the subtrees (read from the tree's read model: the
/// ancestor paths change with moves of any ancestor, which no cached state follows).
async fn within(state: &AppState, id: Uuid, roots: &[Uuid]) -> Result<bool, ApiError> {
    let client = state.pool.get().await?;
    let row = client
        .query_opt("SELECT 1 FROM workspaces WHERE id = $1 AND ancestors && $2 AND status <> 'deleted'", &[&id, &roots])
        .await?;
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
        return Err(DomainError::conflict("parent_archived", "the parent workspace is archived").into());
    }
    Ok(())
}
