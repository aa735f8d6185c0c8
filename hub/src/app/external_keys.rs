//! External key commands: check the credential (its shape, then, when `VAN_API_URL` is
//! set, with the provider), seal it under the workspace's data key and record it; delete
//! (which revokes the interaction keys routed to it, in the same commit).
//!
//! The provider check is `GET {VAN_API_URL}/v4/apiKeyProfiles` with HTTP Basic
//! authentication, VAN's own scheme: the user is `settings.application_name` (default
//! `admin-api`), the password the credential as given. A 2xx accepts the key, 401 or 403
//! refuses it, anything else (no answer in 5 s, a 5xx, another status) is the provider
//! being unavailable. The credential never appears in a log line or an error.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use shared::crypto;
use shared::domain::Aggregate;
use shared::domain::external_keys::{self, NewExternalKey};
use shared::domain::workspace::{Workspace, WorkspaceCommand};
use shared::events::workspace::ExternalProvider;
use uuid::Uuid;

use crate::commands;
use crate::http::AppState;
use crate::http::context::Ctx;
use crate::http::error::ApiError;

/// How long the provider has to answer a check.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(5);
/// The user of VAN's Basic authentication when the settings name no application.
const DEFAULT_APPLICATION_NAME: &str = "admin-api";

/// What a create request asks for.
pub struct Create {
    pub provider: ExternalProvider,
    pub name: String,
    pub api_key: String,
    pub settings: Option<serde_json::Value>,
}

/// Records a new external key; returns its id. The caller has checked that the principal
/// sees the workspace.
pub async fn create(state: &AppState, ctx: &Ctx, workspace_id: Uuid, request: Create) -> Result<Uuid, ApiError> {
    let api_key = SecretString::from(request.api_key);
    external_keys::api_key(api_key.expose_secret())?;
    let new = |sealed_api_key: Vec<u8>, id: Uuid| NewExternalKey {
        id,
        provider: request.provider,
        name: request.name.clone(),
        key_hint: external_keys::key_hint(api_key.expose_secret()),
        sealed_api_key,
        settings: request.settings.clone(),
        created_by: ctx.metadata.actor.clone(),
    };
    // Every rule that needs no secret first (a placeholder stands for the sealed
    // credential), so a request the workspace refuses never reaches the provider.
    let (current, _) = commands::load::<Workspace>(&state.store, workspace_id).await?;
    current.decide(WorkspaceCommand::AddExternalKey(Box::new(new(vec![0], Uuid::nil()))))?;
    if let Some(base) = &state.config.van_api_url {
        check_with_van(base, &api_key, request.settings.as_ref()).await?;
    }
    let client = state.pool.get().await?;
    let data_key = crate::secrets::data_key(&**client, &state.master_key, workspace_id).await?;
    drop(client);
    let id = Uuid::now_v7();
    let sealed = crypto::seal(
        data_key.expose_secret(),
        api_key.expose_secret().as_bytes(),
        &crypto::external_key_context(workspace_id, id),
    );
    let command = WorkspaceCommand::AddExternalKey(Box::new(new(sealed, id)));
    commands::execute::<Workspace>(&state.store, workspace_id, ctx.if_match, &ctx.metadata, |w| {
        w.decide(command.clone())
    })
    .await?;
    Ok(id)
}

/// Deletes an external key and revokes the interaction keys routed to it.
pub async fn delete(state: &AppState, ctx: &Ctx, workspace_id: Uuid, external_key_id: Uuid) -> Result<(), ApiError> {
    commands::execute::<Workspace>(&state.store, workspace_id, ctx.if_match, &ctx.metadata, |w| {
        w.decide(WorkspaceCommand::DeleteExternalKey { external_key_id })
    })
    .await?;
    Ok(())
}

/// Asks VAN whether it accepts the credential (see the module's documentation).
async fn check_with_van(
    base: &str,
    api_key: &SecretString,
    settings: Option<&serde_json::Value>,
) -> Result<(), ApiError> {
    let application = settings
        .and_then(|s| s.get("application_name"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or(DEFAULT_APPLICATION_NAME);
    let unavailable = |why: &str| {
        tracing::warn!(reason = why, "VAN could not check an external key");
        ApiError::BadGateway {
            code: "provider_unavailable",
            detail: "the provider could not check the credential now; retry later".into(),
        }
    };
    let client = reqwest::Client::builder()
        .timeout(PROVIDER_TIMEOUT)
        .connect_timeout(PROVIDER_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|_| unavailable("no HTTP client"))?;
    let url = format!("{}/v4/apiKeyProfiles", base.trim_end_matches('/'));
    let response = client
        .get(url)
        .basic_auth(application, Some(api_key.expose_secret()))
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|error| {
            unavailable(if error.is_timeout() {
                "timeout"
            } else if error.is_connect() {
                "unreachable"
            } else {
                "request failed"
            })
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(ApiError::Unprocessable {
            code: "external_key_rejected",
            detail: "the provider refused the credential".into(),
        });
    }
    tracing::warn!(status = status.as_u16(), "VAN answered an external key check with an unexpected status");
    Err(unavailable("unexpected status"))
}
