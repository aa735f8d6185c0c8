//! Organization commands: create, change and delete. Create and change answer with the
//! organization as the command left it; the view is rendered from that state, not read
//! back.

use shared::domain::Aggregate;
use shared::domain::organization::{LimitsPatch, Organization, OrganizationCommand};
use shared::scope::Scope;
use uuid::Uuid;

use super::cache::Loaded;
use super::load;
use crate::commands;
use crate::http::AppState;
use crate::http::context::Ctx;
use crate::http::error::ApiError;

/// What a create request asks for.
pub struct Create {
    pub name: String,
    pub email: String,
    pub plan: String,
    pub limits: LimitsPatch,
}

/// Creates an organization (operator only); returns its id and state.
pub async fn create(state: &AppState, ctx: &Ctx, request: Create) -> Result<(Uuid, Loaded<Organization>), ApiError> {
    ctx.principal.require_operator()?;
    let id = Uuid::now_v7();
    let Create { name, email, plan, limits } = request;
    let command = OrganizationCommand::Create { name, email, plan, limits };
    // A new id: the stream cannot exist, so there is nothing to read.
    let done = commands::run::<Organization>(&state.store, id, load::fresh(), None, &ctx.metadata, |org| {
        Ok((org.decide(command.clone())?, Vec::new()))
    })
    .await?;
    Ok((id, done.loaded))
}

/// What a change request asks for; fields left out keep their value.
pub struct Update {
    pub name: Option<String>,
    pub email: Option<String>,
    pub plan: Option<String>,
    /// `None` when the request names no limit at all.
    pub limits: Option<LimitsPatch>,
}

/// Changes an organization. The plan and the limits are the operator's business, the
/// rest is also the organization's own keys' (unless restricted to workspaces).
pub async fn update(state: &AppState, ctx: &Ctx, id: Uuid, request: Update) -> Result<Loaded<Organization>, ApiError> {
    ctx.principal.require(Scope::OrgsWrite)?;
    ctx.principal.require_unrestricted()?;
    if request.plan.is_some() || request.limits.is_some() {
        ctx.principal.require_operator()?;
    }
    let current = visible(state, ctx, id).await?;
    let Update { name, email, plan, limits } = request;
    let command = OrganizationCommand::Update { name, email, plan, limits: limits.unwrap_or_default() };
    let done = commands::run::<Organization>(&state.store, id, current, ctx.if_match, &ctx.metadata, |org| {
        Ok((org.decide(command.clone())?, Vec::new()))
    })
    .await?;
    Ok(done.loaded)
}

/// Deletes an organization (operator only); see [`crate::deletion::delete_organization`]
/// for what goes with it.
pub async fn delete(state: &AppState, ctx: &Ctx, id: Uuid) -> Result<(), ApiError> {
    ctx.principal.require_operator()?;
    visible(state, ctx, id).await?;
    crate::deletion::delete_organization(&state.store, id, ctx.if_match, &ctx.metadata).await
}

/// The organization, if it is live and the principal may see it (else 404). A cached state
/// that missed its deletion on another hub is caught by the command, decided on the log.
async fn visible(state: &AppState, ctx: &Ctx, id: Uuid) -> Result<Loaded<Organization>, ApiError> {
    let organization = load::load::<Organization>(&state.store, id).await?;
    if !organization.state.exists || organization.state.deleted || !ctx.principal.sees_organization(id) {
        return Err(ApiError::NotFound("organization"));
    }
    Ok(organization)
}
