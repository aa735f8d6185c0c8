//! `/v1/settings`: the calling organization's settings.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::domain::Aggregate;
use shared::domain::organization::{Organization, OrganizationCommand};
use shared::events::organization::OrganizationSettings;
use shared::scope::Scope;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::context::Ctx;
use super::error::{ApiError, Problem};
use super::extract::{Json, Query, double_option};
use super::{AppState, conditional};
use crate::commands;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_settings, update_settings))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsView {
    pub organization_id: Uuid,
    /// Requests per minute per key; `null` means the server default.
    pub rate_limit_per_minute: Option<u32>,
    /// The limit in force: the organization's, else the server default, and never above
    /// the ceiling.
    pub effective_rate_limit_per_minute: u32,
    /// The most `rate_limit_per_minute` may be set to (set by the operator).
    pub rate_limit_ceiling_per_minute: u32,
    /// Longest lifetime of new admin keys, in days; `null` means unlimited.
    pub max_key_lifetime_days: Option<u32>,
    pub version: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettings {
    /// `null` returns to the server default; at most the organization's
    /// `rate_limit_ceiling_per_minute` (more → 422).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub rate_limit_per_minute: Option<Option<u32>>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub max_key_lifetime_days: Option<Option<u32>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SettingsQuery {
    /// The organization (the operator must name it; a key reads its own).
    organization_id: Option<Uuid>,
}

fn organization(ctx: &Ctx, requested: Option<Uuid>) -> Result<Uuid, ApiError> {
    match (ctx.principal.organization_id(), requested) {
        (Some(own), None) => Ok(own),
        (Some(own), Some(requested)) if own == requested => Ok(own),
        (Some(_), Some(_)) => Err(ApiError::NotFound("organization")),
        (None, Some(requested)) => Ok(requested),
        (None, None) => {
            Err(ApiError::invalid("organization_id", "required", "the operator must name the organization"))
        }
    }
}

/// The requests per minute a key of an organization gets: its own setting, else the
/// server default, never above the operator's ceiling (which may have been lowered below
/// the setting), whose own default is the server default.
pub fn effective_rate_limit(setting: Option<u32>, ceiling: Option<u32>, default: u32) -> u32 {
    setting.unwrap_or(default).min(ceiling.unwrap_or(default))
}

async fn view(state: &AppState, id: Uuid) -> Result<SettingsView, ApiError> {
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT settings, version, rate_limit_ceiling_per_minute FROM organizations \
             WHERE id = $1 AND status = 'active'",
            &[&id],
        )
        .await?
        .ok_or(ApiError::NotFound("organization"))?;
    let settings: OrganizationSettings = serde_json::from_value(row.try_get("settings")?).unwrap_or_default();
    let ceiling = row.try_get::<_, Option<i32>>("rate_limit_ceiling_per_minute")?.and_then(|v| u32::try_from(v).ok());
    let default = state.config.rate_limit_per_minute;
    Ok(SettingsView {
        organization_id: id,
        rate_limit_per_minute: settings.rate_limit_per_minute,
        effective_rate_limit_per_minute: effective_rate_limit(settings.rate_limit_per_minute, ceiling, default),
        rate_limit_ceiling_per_minute: ceiling.unwrap_or(default),
        max_key_lifetime_days: settings.max_key_lifetime_days,
        version: row.try_get("version")?,
    })
}

/// The organization's settings.
#[utoipa::path(get, path = "/v1/settings", tag = "settings", params(SettingsQuery),
    responses((status = 200, description = "OK", body = SettingsView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn get_settings(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<SettingsQuery>,
) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::SettingsRead)?;
    let settings = view(&state, organization(&ctx, query.organization_id)?).await?;
    Ok((conditional::etag(settings.version), axum::Json(settings)).into_response())
}

/// Change the organization's settings.
#[utoipa::path(patch, path = "/v1/settings", tag = "settings", params(SettingsQuery), request_body = UpdateSettings,
    responses((status = 200, description = "OK", body = SettingsView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn update_settings(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<SettingsQuery>,
    Json(body): Json<UpdateSettings>,
) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::SettingsWrite)?;
    ctx.principal.require_unrestricted()?;
    let id = organization(&ctx, query.organization_id)?;
    view(&state, id).await?;
    commands::execute::<Organization>(&state.store, id, ctx.if_match, &ctx.metadata, |org| {
        let mut settings = org.settings.clone();
        if let Some(limit) = body.rate_limit_per_minute {
            settings.rate_limit_per_minute = limit;
        }
        if let Some(days) = body.max_key_lifetime_days {
            settings.max_key_lifetime_days = days;
        }
        org.decide(OrganizationCommand::ChangeSettings {
            settings,
            default_ceiling: state.config.rate_limit_per_minute,
        })
    })
    .await?;
    let settings = view(&state, id).await?;
    Ok((conditional::etag(settings.version), axum::Json(settings)).into_response())
}
