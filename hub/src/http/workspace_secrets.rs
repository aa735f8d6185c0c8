//! A workspace's signing secret: access tokens, rotation, and the keyring read that lets
//! instances open the sealed secrets of the workspaces they serve.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use shared::access_token;
use shared::domain::Aggregate;
use shared::domain::workspace::{Workspace, WorkspaceCommand};
use shared::link::{DataKeysReply, DataKeysRequest, KeyringEntry, MAX_DATA_KEYS};
use shared::scope::Scope;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::context::Ctx;
use super::error::{ApiError, Problem};
use super::extract::{Json, OptionalJson, Path};
use super::shown_once::ShownOnce;
use crate::{commands, secrets};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(access_token))
        .routes(routes!(rotate_secret))
        .routes(routes!(keyring))
        .routes(routes!(keyring_batch))
}

const DEFAULT_TOKEN_SECONDS: i64 = 3600;
const MAX_TOKEN_SECONDS: i64 = access_token::MAX_LIFETIME_SECONDS;
const DEFAULT_GRACE_SECONDS: i64 = 3600;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessTokenRequest {
    /// Lifetime of the token (default 3600, at most 86400).
    pub expires_in_seconds: Option<i64>,
}

// No `Debug`: it carries a credential.
#[derive(Serialize, ToSchema)]
pub struct AccessToken {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long tokens signed with the previous secret keep working (default 3600).
    pub grace_period_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    #[schema(value_type = String)]
    pub secret: ShownOnce,
    /// The same secret as Standard Webhooks libraries take it (`whsec_` + base64 of its
    /// UTF-8 bytes).
    #[schema(value_type = String)]
    pub webhook_secret: ShownOnce,
    pub secret_version: i32,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Mint an access token for the workspace's data plane, signed with its current secret.
#[utoipa::path(post, path = "/v1/workspaces/{id}/access-token", tag = "workspaces", params(("id" = Uuid, Path)),
    request_body(content = Option<AccessTokenRequest>, description = "Optional"),
    responses((status = 200, description = "OK", body = AccessToken),
              (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn access_token(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    OptionalJson(body): OptionalJson<AccessTokenRequest>,
) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::WorkspacesWrite)?;
    super::workspaces::find(&state, &ctx.principal, id).await?;
    let seconds = body.unwrap_or_default().expires_in_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS);
    if !(1..=MAX_TOKEN_SECONDS).contains(&seconds) {
        return Err(ApiError::invalid(
            "expires_in_seconds",
            "range",
            format!("expires_in_seconds must be between 1 and {MAX_TOKEN_SECONDS}"),
        ));
    }
    let (workspace, _) = commands::load::<Workspace>(&state.store, id).await?;
    // Instances refuse an archived workspace's tokens (403): none is minted to begin with,
    // refused like every other change to an archived workspace.
    if workspace.archived {
        return Err(ApiError::Conflict {
            code: "workspace_archived",
            detail: "the workspace is archived; restore it before issuing access tokens".into(),
        });
    }
    let sealed = workspace
        .sealed_secret
        .as_deref()
        .ok_or(ApiError::Conflict { code: "no_secret", detail: "the workspace has no signing secret".into() })?;
    let client = state.pool.get().await?;
    let data_key = secrets::data_key(&**client, &state.master_key, id).await?;
    let secret = secrets::open_secret(&data_key, id, workspace.secret_version, sealed)?;
    let now = Utc::now();
    let expires_at = now + Duration::seconds(seconds);
    let claims = access_token::Claims::new(id, now.timestamp(), expires_at.timestamp());
    let token =
        access_token::encode(&claims, workspace.secret_version, secret.expose_secret()).map_err(ApiError::internal)?;
    Ok(no_store(axum::Json(AccessToken { access_token: token, token_type: "Bearer", expires_at }).into_response()))
}

/// Issue a new signing secret; tokens signed with the previous one work for the grace period.
#[utoipa::path(post, path = "/v1/workspaces/{id}/rotate-secret", tag = "workspaces", params(("id" = Uuid, Path)),
    request_body(content = Option<RotateSecret>, description = "Optional"),
    responses((status = 200, description = "OK", body = RotatedSecret),
              (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn rotate_secret(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    OptionalJson(body): OptionalJson<RotateSecret>,
) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::WorkspacesWrite)?;
    super::workspaces::find(&state, &ctx.principal, id).await?;
    let grace = body.unwrap_or_default().grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    let client = state.pool.get().await?;
    let data_key = secrets::data_key(&**client, &state.master_key, id).await?;
    drop(client);
    let (current, _) = commands::load::<Workspace>(&state.store, id).await?;
    let version = current.secret_version + 1;
    let (secret, sealed) = secrets::new_secret(&data_key, id, version);
    let now = Utc::now();
    let executed = commands::execute::<Workspace>(&state.store, id, ctx.if_match, &ctx.metadata, |w| {
        w.decide(WorkspaceCommand::IssueSecret {
            version,
            sealed_secret: sealed.clone(),
            grace_period: Duration::try_seconds(grace).unwrap_or(Duration::MAX),
            now,
        })
    })
    .await?;
    Ok(no_store(
        axum::Json(RotatedSecret {
            secret: ShownOnce::from(&secret),
            webhook_secret: ShownOnce::webhook_secret(secret.expose()),
            secret_version: executed.state.secret_version,
            previous_secret_expires_at: executed.state.previous_secret_valid_until,
        })
        .into_response(),
    ))
}

/// A workspace's sealed data key (operator: the key instances present).
#[utoipa::path(get, path = "/v1/internal/keyring/{id}", tag = "operations", params(("id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = KeyringEntry),
              (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn keyring(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<KeyringEntry>, ApiError> {
    ctx.principal.require_operator()?;
    let client = state.pool.get().await?;
    let row = client
        .query_opt("SELECT sealed_data_key FROM keyring WHERE workspace_id = $1", &[&id])
        .await?
        .ok_or(ApiError::NotFound("workspace key"))?;
    let sealed: Option<Vec<u8>> = row.try_get("sealed_data_key")?;
    let sealed =
        sealed.ok_or(ApiError::Gone { code: "key_destroyed", detail: "the workspace's keys were destroyed".into() })?;
    Ok(axum::Json(KeyringEntry { workspace_id: id, sealed_data_key: hex::encode(sealed) }))
}

/// Many workspaces' sealed data keys (operator: the key instances present). Workspaces
/// with no key are left out; a destroyed key is `null`.
#[utoipa::path(post, path = "/v1/internal/keyring", tag = "operations", request_body = DataKeysRequest,
    responses((status = 200, description = "OK", body = DataKeysReply),
              (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn keyring_batch(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(request): Json<DataKeysRequest>,
) -> Result<axum::Json<DataKeysReply>, ApiError> {
    ctx.principal.require_operator()?;
    if !(1..=MAX_DATA_KEYS).contains(&request.workspace_ids.len()) {
        return Err(ApiError::invalid(
            "workspace_ids",
            if request.workspace_ids.is_empty() { "min_items" } else { "max_items" },
            format!("workspace_ids holds 1 to {MAX_DATA_KEYS} ids"),
        ));
    }
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT workspace_id, sealed_data_key FROM keyring WHERE workspace_id = ANY($1)",
            &[&request.workspace_ids],
        )
        .await?;
    Ok(axum::Json(DataKeysReply { items: rows.iter().map(secrets::data_key_item).collect() }))
}
