//! The instance's runtime API: `GET /v1/runtime/workspace` with a workspace access token.
//!
//! A token names its workspace (`sub`) and the secret version that signed it (`kid`). The
//! instance opens that secret, sealed in its materialized state, with the workspace's data
//! key (fetched once from the hub's keyring and opened with the shared master key). The
//! previous secret verifies only until its grace period ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Utc;
use shared::crypto;
use shared::domain::workspace::Workspace;
use uuid::Uuid;

use crate::feed::HubFeed;

/// Where the workspaces' sealed data keys come from.
pub enum Keyring {
    /// The hub's `GET /v1/internal/keyring/{id}` (a separate instance).
    Hub(HubFeed),
    /// The hub's `keyring` table in the same database (the instance of a single-node hub).
    Database,
}

pub struct RuntimeState {
    pub client: tokio_postgres::Client,
    pub keyring: Keyring,
    pub master_key: Option<[u8; 32]>,
    data_keys: Mutex<HashMap<Uuid, [u8; 32]>>,
}

impl RuntimeState {
    pub fn new(client: tokio_postgres::Client, keyring: Keyring, master_key: Option<[u8; 32]>) -> Self {
        Self { client, keyring, master_key, data_keys: Mutex::default() }
    }

    async fn sealed_data_key(&self, id: Uuid) -> anyhow::Result<Vec<u8>> {
        match &self.keyring {
            Keyring::Hub(feed) => feed.sealed_data_key(id).await,
            Keyring::Database => {
                let row = self
                    .client
                    .query_opt("SELECT sealed_data_key FROM public.keyring WHERE workspace_id = $1", &[&id])
                    .await?;
                row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)).ok_or_else(|| anyhow::anyhow!("no data key"))
            }
        }
    }
}

fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": format!("https://admin-api.dev/problems/{code}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, "application/problem+json".parse().expect("static header"));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static header"));
    }
    response
}

fn unauthorized(detail: &str) -> Response {
    problem(StatusCode::UNAUTHORIZED, "unauthorized", detail)
}

#[derive(serde::Deserialize)]
struct Subject {
    sub: String,
}

#[derive(serde::Deserialize)]
struct Claims {}

pub async fn workspace(State(state): State<Arc<RuntimeState>>, headers: HeaderMap) -> Response {
    match serve(&state, &headers).await {
        Ok(body) => Json(body).into_response(),
        Err(response) => response,
    }
}

async fn serve(state: &RuntimeState, headers: &HeaderMap) -> Result<serde_json::Value, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("send `Authorization: Bearer <workspace access token>`"))?;
    let header = jsonwebtoken::decode_header(token).map_err(|_| unauthorized("malformed token"))?;
    let version: i32 =
        header.kid.as_deref().and_then(|k| k.parse().ok()).ok_or_else(|| unauthorized("malformed token"))?;
    // Which workspace the (not yet verified) token names: verified below with its secret.
    let payload = token.split('.').nth(1).ok_or_else(|| unauthorized("malformed token"))?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| unauthorized("malformed token"))?;
    let subject: Subject = serde_json::from_slice(&payload).map_err(|_| unauthorized("malformed token"))?;
    let id: Uuid = subject.sub.parse().map_err(|_| unauthorized("malformed token"))?;

    let unavailable =
        |_| problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the instance database is unavailable");
    let row =
        state.client.query_opt("SELECT state FROM workspaces WHERE id = $1", &[&id]).await.map_err(unavailable)?;
    let workspace: Workspace = row
        .and_then(|r| r.get::<_, Option<serde_json::Value>>(0))
        .and_then(|s| serde_json::from_value(s).ok())
        .ok_or_else(|| unauthorized("unknown workspace"))?;
    let sealed = if version == workspace.secret_version {
        workspace.sealed_secret.as_deref()
    } else if version == workspace.secret_version - 1
        && workspace.previous_secret_valid_until.is_some_and(|until| until > Utc::now())
    {
        workspace.previous_sealed_secret.as_deref()
    } else {
        None
    }
    .ok_or_else(|| unauthorized("the token's secret is no longer valid"))?;

    let data_key = data_key(state, id).await?;
    let sealed = hex::decode(sealed).map_err(|_| unauthorized("unreadable secret"))?;
    let secret = crypto::open(&data_key, &sealed, &crypto::secret_context(id, version))
        .map_err(|_| unauthorized("the token's secret cannot be opened"))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["admin-api"]);
    validation.set_required_spec_claims(&["exp", "sub", "iss"]);
    jsonwebtoken::decode::<Claims>(token, &jsonwebtoken::DecodingKey::from_secret(&secret), &validation)
        .map_err(|_| unauthorized("invalid or expired token"))?;

    Ok(serde_json::json!({
        "id": id,
        "name": workspace.name,
        "status": if workspace.archived { "archived" } else { "active" },
        "settings": workspace.settings,
        "webhook_uris": workspace.webhook_uris,
        "public_keys": workspace.public_keys,
        "secret_version": workspace.secret_version,
    }))
}

async fn data_key(state: &RuntimeState, id: Uuid) -> Result<[u8; 32], Response> {
    if let Some(key) = state.data_keys.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return Ok(*key);
    }
    let master = state
        .master_key
        .ok_or_else(|| problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the instance has no HUB_MASTER_KEY"))?;
    let sealed = state.sealed_data_key(id).await.map_err(|_| unauthorized("the workspace's keys are unavailable"))?;
    let key = crypto::open(&master, &sealed, &crypto::data_key_context(id))
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| unauthorized("the workspace's keys cannot be opened"))?;
    state.data_keys.lock().unwrap_or_else(|p| p.into_inner()).insert(id, key);
    Ok(key)
}
