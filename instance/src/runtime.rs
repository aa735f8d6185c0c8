//! The instance's runtime API: `GET /v1/runtime/workspace` with a workspace access token,
//! and `POST /v1/interactions` with an interaction key (see [`crate::ingest`]).
//!
//! A token names its workspace (`sub`) and the secret version that signed it (`kid`). The
//! instance opens that secret, sealed in its materialized state, with the workspace's data
//! key (kept sealed in the instance's own database, see [`crate::keyring`], and opened
//! with the shared master key): no hub is asked while serving. The
//! previous secret verifies only until its grace period ends. A token must also name the
//! workspace as its audience, be valid now (`nbf`, `exp`) and live at most 24 hours
//! (see [`shared::access_token`]).
//!
//! Failed authentications are counted per client address (an IPv6 client by its /64)
//! like on the hub: past
//! `HUB_AUTH_FAILURES_PER_MINUTE`, an address presenting credentials gets 429 until its
//! window passes, before any token is looked at.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use secrecy::ExposeSecret;
use shared::domain::workspace::Workspace;
use shared::rate_limit::Windows;
use shared::{access_token, crypto};
use tower_http::catch_panic::CatchPanicLayer;
use uuid::Uuid;

use crate::config::MasterKey;

/// Where the workspaces' sealed data keys come from.
pub enum Keyring {
    /// The instance's own `data_keys` table (a separate instance).
    Instance,
    /// The hub's `keyring` table in the same database (the instance of a single-node hub).
    Database,
}

pub struct RuntimeState {
    pub pool: deadpool_postgres::Pool,
    pub keyring: Keyring,
    master_key: Option<MasterKey>,
    data_keys: Mutex<HashMap<Uuid, [u8; 32]>>,
    /// Failed authentications per client address.
    failures: Windows,
    auth_failures_per_minute: u32,
    /// Hashes presented interaction keys like the hub (its pepper derives from the master key).
    pub(crate) key_hasher: Option<shared::keys::KeyHasher>,
    /// Interactions and deliveries counted for the hubs (see [`crate::usage`]).
    pub usage: Arc<crate::usage::Usage>,
    /// Wakes the webhook sender when an accepted interaction brought deliveries.
    pub(crate) deliveries_wake: Arc<tokio::sync::Notify>,
    /// Interaction keys recently found usable, for the check before a body is read.
    pub(crate) key_cache: crate::key_cache::KeyCache,
    /// The writers storing accepted interactions in batches (see [`crate::ingest_batch`]).
    pub(crate) ingest: crate::ingest_batch::Writers,
}

impl RuntimeState {
    pub fn new(
        pool: deadpool_postgres::Pool,
        keyring: Keyring,
        master_key: Option<MasterKey>,
        auth_failures_per_minute: u32,
    ) -> Self {
        let key_hasher =
            master_key.as_ref().map(|key| shared::keys::KeyHasher::new(&shared::keys::key_pepper(key.expose_secret())));
        let deliveries_wake = Arc::<tokio::sync::Notify>::default();
        let ingest = crate::ingest_batch::Writers::spawn(pool.clone(), deliveries_wake.clone());
        Self {
            pool,
            keyring,
            key_hasher,
            master_key,
            data_keys: Mutex::default(),
            failures: Windows::default(),
            auth_failures_per_minute,
            usage: Arc::default(),
            deliveries_wake,
            key_cache: crate::key_cache::KeyCache::default(),
            ingest,
        }
    }

    /// The workspace's data key, opened with the master key (cached once opened).
    pub(crate) async fn open_data_key(&self, id: Uuid) -> anyhow::Result<[u8; 32]> {
        if let Some(key) = self.data_keys.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(*key);
        }
        let master = self.master_key.as_ref().ok_or_else(|| anyhow::anyhow!("the instance has no HUB_MASTER_KEY"))?;
        let sealed = self.sealed_data_key(id).await?;
        let key = crypto::open(master.expose_secret(), &sealed, &crypto::data_key_context(id))
            .ok()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| anyhow::anyhow!("the workspace's data key cannot be opened"))?;
        self.data_keys.lock().unwrap_or_else(|p| p.into_inner()).insert(id, key);
        Ok(key)
    }

    async fn sealed_data_key(&self, id: Uuid) -> anyhow::Result<Vec<u8>> {
        match &self.keyring {
            Keyring::Instance => {
                let client = self.pool.get().await?;
                crate::keyring::sealed_data_key(&client, id).await?.ok_or_else(|| anyhow::anyhow!("no data key"))
            }
            Keyring::Database => {
                let row = self
                    .pool
                    .get()
                    .await?
                    .query_opt("SELECT sealed_data_key FROM public.keyring WHERE workspace_id = $1", &[&id])
                    .await?;
                row.and_then(|r| r.get::<_, Option<Vec<u8>>>("sealed_data_key"))
                    .ok_or_else(|| anyhow::anyhow!("no data key"))
            }
        }
    }
}

pub(crate) fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    let mut response = shared::problem::response(status, code, detail);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static header"));
    }
    response
}

pub(crate) fn unauthorized(detail: &str) -> Response {
    problem(StatusCode::UNAUTHORIZED, "unauthorized", detail)
}

/// The runtime API's routes, throttled and bounded in time; a panic answers 500.
pub fn router(state: Arc<RuntimeState>) -> Router {
    let bounded = Router::new()
        .route("/v1/runtime/workspace", get(workspace))
        .route("/v1/runtime/deliveries", get(crate::deliveries::list))
        .route("/v1/runtime/deliveries/count", get(crate::deliveries::count))
        .route("/v1/runtime/deliveries/{id}/retry", axum::routing::post(crate::deliveries::retry))
        .layer(axum::middleware::from_fn(shared::serve::request_timeout));
    // Ingest keeps its own deadline (crate::ingest::DEADLINE): its answer must say whether
    // the interaction was stored, which a timeout from outside cannot know.
    Router::new()
        .route("/v1/interactions", axum::routing::post(crate::ingest::interactions))
        .merge(bounded)
        .layer(axum::middleware::from_fn_with_state(state.clone(), throttle))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// A problem instead of a dropped connection when a handler panics.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("runtime request handler panicked");
    problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
}

/// Refuses credentials from an address past its failed authentications, and counts every
/// 401 (no credentials included: every runtime route demands them).
async fn throttle(State(state): State<Arc<RuntimeState>>, request: Request, next: Next) -> Response {
    let ip = shared::rate_limit::client(request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
    if request.headers().contains_key(header::AUTHORIZATION) {
        let gate = state.failures.peek(&ip, state.auth_failures_per_minute);
        if !gate.allowed {
            shared::metrics::rate_limited(shared::metrics::Limit::FailedAuthentications);
            let mut response = problem(
                StatusCode::TOO_MANY_REQUESTS,
                shared::rate_limit::TOO_MANY_FAILURES_CODE,
                shared::rate_limit::TOO_MANY_FAILURES_DETAIL,
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(gate.reset_seconds));
            return response;
        }
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        shared::metrics::authentication_failed();
        state.failures.record(&ip);
    }
    response
}

/// What the runtime API serves of a workspace.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RuntimeWorkspace {
    pub id: Uuid,
    pub name: String,
    /// Always `active`: an archived workspace answers 403 `workspace_archived`.
    #[schema(pattern = "^active$")]
    pub status: &'static str,
    /// The workspace's settings (a JSON object).
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    pub webhook_uris: Vec<String>,
    pub public_keys: Vec<shared::events::workspace::PublicKey>,
    /// The version of the secret that signs new tokens.
    pub secret_version: i32,
}

/// The workspace the access token was issued for, as this instance holds it.
#[utoipa::path(
    get,
    path = "/v1/runtime/workspace",
    tag = "runtime",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token's workspace", body = RuntimeWorkspace),
        (status = 401, description = "No token, or a malformed, expired, foreign or no longer valid one (`unauthorized`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 403, description = "The workspace is archived (`workspace_archived`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 429, description = "Too many failed authentications from this address (`too_many_failed_authentications`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 503, description = "The instance's database or master key is unavailable (`unavailable`)", content_type = "application/problem+json", body = crate::openapi::Problem),
    )
)]
pub async fn workspace(State(state): State<Arc<RuntimeState>>, headers: HeaderMap) -> Response {
    match serve(&state, &headers).await {
        Ok(body) => Json(body).into_response(),
        Err(response) => response,
    }
}

async fn serve(state: &RuntimeState, headers: &HeaderMap) -> Result<RuntimeWorkspace, Response> {
    let (id, workspace) = authenticate(state, headers).await?;
    Ok(RuntimeWorkspace {
        id,
        name: workspace.name,
        status: "active",
        settings: workspace.settings,
        webhook_uris: workspace.webhook_uris,
        public_keys: workspace.public_keys,
        secret_version: workspace.secret_version,
    })
}

/// The request's one `Authorization` header: none when it has two (which credential the
/// client meant is anyone's guess), so the request is refused like one without.
pub(crate) fn single_authorization(headers: &HeaderMap) -> Option<&axum::http::HeaderValue> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    values.next().is_none().then_some(value)
}

/// The workspace a request's access token was issued for, once the token verifies: 401
/// for a missing, malformed, expired or foreign token, 403 for an archived workspace.
pub(crate) async fn authenticate(state: &RuntimeState, headers: &HeaderMap) -> Result<(Uuid, Workspace), Response> {
    let token = single_authorization(headers)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("send `Authorization: Bearer <workspace access token>`"))?;
    // Which workspace the (not yet verified) token names: verified below with its secret.
    let access_token::Unverified { workspace: id, secret_version: version } =
        access_token::unverified(token).ok_or_else(|| unauthorized("malformed token"))?;

    let unavailable =
        || problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the instance database is unavailable");
    let client = state.pool.get().await.map_err(|_| unavailable())?;
    let row =
        client.query_opt("SELECT state FROM workspaces WHERE id = $1", &[&id]).await.map_err(|_| unavailable())?;
    drop(client);
    let workspace: Workspace = row
        .and_then(|r| r.get::<_, Option<serde_json::Value>>("state"))
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
    access_token::verify(token, id, &secret, Utc::now().timestamp())
        .map_err(|refusal| unauthorized(&refusal.to_string()))?;
    if workspace.archived {
        return Err(problem(StatusCode::FORBIDDEN, "workspace_archived", "the workspace is archived"));
    }
    Ok((id, workspace))
}

async fn data_key(state: &RuntimeState, id: Uuid) -> Result<[u8; 32], Response> {
    if let Some(key) = state.data_keys.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return Ok(*key);
    }
    let master = state
        .master_key
        .as_ref()
        .ok_or_else(|| problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the instance has no HUB_MASTER_KEY"))?;
    let sealed = state.sealed_data_key(id).await.map_err(|_| unauthorized("the workspace's keys are unavailable"))?;
    let key = crypto::open(master.expose_secret(), &sealed, &crypto::data_key_context(id))
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| unauthorized("the workspace's keys cannot be opened"))?;
    state.data_keys.lock().unwrap_or_else(|p| p.into_inner()).insert(id, key);
    Ok(key)
}
