//! Who is calling: the operator key, an organization's admin key or a technology partner
//! app's key.
//!
//! An app key authenticates on `/v1/partner/*` only, and only an app key does there:
//! elsewhere it is refused with 401 before any lookup, as is every principal but an app by
//! the [`AppPrincipal`] extractor of the partner routes (403 for the operator and admin
//! keys, whose credentials are valid but not an app's). Handlers of every other route take
//! a [`Principal`], which refuses an app.
//!
//! The `authenticate` middleware resolves the `Authorization` header once per request
//! (Bearer, or Basic with the key as username and an empty password), applies the
//! caller's rate limit, and leaves the outcome in the request's extensions; handlers take
//! a [`Principal`] argument, which is a 401 when authentication failed or was absent.
//! Failed authentications are counted per client address (an IPv6 client by its /64);
//! past `HUB_AUTH_FAILURES_PER_MINUTE` an address presenting credentials gets 429 until its
//! window passes, before any key is looked up. The operator key is recognised first, in
//! memory: other clients' failures from the same address (instances share the operator's
//! address in many deployments) never lock it out.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Utc;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use shared::domain::api_key::Grantor;
use shared::events::app::AppKind;
use shared::keys::{KeyHasher, KeyKind, constant_time_eq};
use shared::metadata::{Actor, ActorType};
use shared::scope::{Scope, Scopes};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::key_cache::{AppRecord, KeyCache, KeyRecord};

/// Where an app key authenticates, and nothing else does.
pub const PARTNER_PREFIX: &str = "/v1/partner/";

#[derive(Debug, Clone)]
pub enum Principal {
    Operator,
    Key(KeyPrincipal),
    /// Present only on `/v1/partner/*`, whose handlers take an [`AppPrincipal`].
    App(AppPrincipal),
}

/// A technology partner app, authenticated by its app key.
#[derive(Debug, Clone, Copy)]
pub struct AppPrincipal {
    pub id: Uuid,
    pub kind: AppKind,
}

#[derive(Debug, Clone)]
pub struct KeyPrincipal {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub scopes: Scopes,
    /// `None`: every workspace of the organization.
    pub workspace_ids: Option<Vec<Uuid>>,
    pub rate_limit_per_minute: Option<u32>,
    /// The limits every key it creates inherits.
    pub owner_user_id: Option<Uuid>,
    pub allowed_ips: Vec<IpNet>,
    pub expires_at: Option<chrono::DateTime<Utc>>,
    /// Authenticated with the previous secret, during the grace period of a rotation.
    pub retiring: bool,
}

impl Principal {
    /// 403 unless the principal holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        match self {
            Self::Operator => Ok(()),
            Self::Key(key) if key.scopes.grants(scope) => Ok(()),
            Self::Key(_) => Err(ApiError::Forbidden(format!("this key lacks the `{}` scope", scope.as_str()))),
            Self::App(_) => Err(ApiError::Forbidden("a partner app key holds no admin scope".into())),
        }
    }

    /// 403 for a key restricted to workspaces: organization-wide changes are not theirs.
    pub fn require_unrestricted(&self) -> Result<(), ApiError> {
        match self.workspace_roots() {
            None => Ok(()),
            Some(_) => Err(ApiError::Forbidden("a key restricted to workspaces cannot change the organization".into())),
        }
    }

    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self {
            Self::Operator => Ok(()),
            Self::Key(_) | Self::App(_) => Err(ApiError::Forbidden("only the operator may do this".into())),
        }
    }

    /// The organization the principal belongs to (`None` for the operator). An app belongs
    /// to none: the nil id, which no organization has, so it sees no organization's rows.
    pub fn organization_id(&self) -> Option<Uuid> {
        match self {
            Self::Operator => None,
            Self::Key(key) => Some(key.organization_id),
            Self::App(_) => Some(Uuid::nil()),
        }
    }

    /// Whether the principal may see a resource of `organization_id`.
    pub fn sees_organization(&self, organization_id: Uuid) -> bool {
        self.organization_id().is_none_or(|own| own == organization_id)
    }

    /// Workspace roots the principal is restricted to (`None`: unrestricted).
    pub fn workspace_roots(&self) -> Option<&[Uuid]> {
        match self {
            Self::Operator => None,
            Self::Key(key) => key.workspace_ids.as_deref(),
            Self::App(_) => Some(&[]),
        }
    }

    pub fn grantor(&self) -> Grantor {
        match self {
            Self::Operator => Grantor::operator(),
            Self::App(_) => Grantor {
                operator: false,
                scopes: Scopes::default(),
                workspace_ids: Some(Vec::new()),
                owner_user_id: None,
                allowed_ips: Vec::new(),
                expires_at: None,
                retiring: false,
            },
            Self::Key(key) => Grantor {
                operator: false,
                scopes: key.scopes.clone(),
                workspace_ids: key.workspace_ids.clone(),
                owner_user_id: key.owner_user_id,
                allowed_ips: key.allowed_ips.clone(),
                expires_at: key.expires_at,
                retiring: key.retiring,
            },
        }
    }

    pub fn actor(&self, ip: Option<IpAddr>) -> Actor {
        let (kind, id) = match self {
            Self::Operator => (ActorType::Operator, None),
            Self::Key(key) => (ActorType::ApiKey, Some(key.id.to_string())),
            Self::App(app) => (ActorType::App, Some(app.id.to_string())),
        };
        Actor { kind, id, ip: ip.map(|ip| ip.to_string()) }
    }

    /// What rate limits and idempotency keys are counted against.
    pub fn subject(&self) -> String {
        match self {
            Self::Operator => subject_of(ActorType::Operator, None),
            Self::Key(key) => subject_of(ActorType::ApiKey, Some(&key.id.to_string())),
            Self::App(app) => subject_of(ActorType::App, Some(&app.id.to_string())),
        }
    }
}

/// The subject string of an actor (see [`Principal::subject`]).
pub fn subject_of(kind: ActorType, id: Option<&str>) -> String {
    match (kind, id) {
        (ActorType::Operator, _) => "operator".to_owned(),
        (ActorType::App, Some(id)) => format!("app:{id}"),
        (_, Some(id)) => format!("key:{id}"),
        (_, None) => "anonymous".to_owned(),
    }
}

/// Checks presented keys.
pub struct Authenticator {
    hasher: KeyHasher,
    operator_hash: Option<Vec<u8>>,
    keys: KeyCache,
}

impl Authenticator {
    pub fn new(hasher: KeyHasher, operator_key: Option<&SecretString>) -> Self {
        let operator_hash = operator_key.map(|key| hasher.hash(key.expose_secret()));
        Self { hasher, operator_hash, keys: KeyCache::default() }
    }

    /// The keys this hub has authenticated, as last read.
    pub fn keys(&self) -> &KeyCache {
        &self.keys
    }

    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    /// Whether `secret` is the operator key: a hash compared in constant time, no lookup.
    fn is_operator(&self, secret: &str) -> bool {
        self.operator_hash.as_ref().is_some_and(|operator| constant_time_eq(operator, &self.hasher.hash(secret)))
    }

    async fn authenticate(&self, state: &AppState, secret: &str, ip: Option<IpAddr>) -> Result<Principal, ApiError> {
        let presented = self.hasher.hash(secret);
        if let Some(operator) = &self.operator_hash
            && constant_time_eq(operator, &presented)
        {
            return Ok(Principal::Operator);
        }
        if is_app_key(secret) {
            return self.authenticate_app(state, secret, presented).await;
        }
        // Typos and garbage fail here, before any database lookup.
        shared::keys::parse(KeyKind::Admin, secret).map_err(|_| ApiError::Unauthorized("invalid API key"))?;
        let record = match self.keys.get(&presented) {
            Some(record) => record,
            None => {
                let epoch = self.keys.epoch();
                let client = state.pool.get().await?;
                let statement = client.prepare_cached(super::key_cache::LOOKUP).await?;
                let row = client
                    .query_opt(&statement, &[&presented])
                    .await?
                    .ok_or(ApiError::Unauthorized("invalid API key"))?;
                let record = KeyRecord::from_row(&row);
                self.keys.put(presented.clone(), record.clone(), epoch);
                record
            }
        };
        let now = Utc::now();
        let retiring = !constant_time_eq(&record.key_hash, &presented);
        if retiring && record.previous_expires_at.is_none_or(|until| until <= now) {
            return Err(ApiError::Unauthorized("this key was rotated and its grace period is over"));
        }
        if record.revoked {
            return Err(ApiError::Unauthorized("this key is revoked"));
        }
        if record.expires_at.is_some_and(|at| at <= now) {
            return Err(ApiError::Unauthorized("this key has expired"));
        }
        if record.organization_status != "active" {
            return Err(ApiError::Unauthorized("the key's organization is deleted"));
        }
        match record.user_status.as_deref() {
            Some("disabled") => return Err(ApiError::Unauthorized("this key is suspended: its user is disabled")),
            Some("deleted") => return Err(ApiError::Unauthorized("this key is revoked: its user was deleted")),
            _ => {}
        }
        let allowed = &record.allowed_ips;
        if !allowed.is_empty() {
            let permitted = ip.is_some_and(|ip| {
                allowed.iter().filter_map(|cidr| cidr.parse::<IpNet>().ok()).any(|net| net.contains(&ip))
            });
            if !permitted {
                return Err(ApiError::Forbidden("this key may not be used from this address".into()));
            }
        }
        Ok(Principal::Key(KeyPrincipal {
            id: record.id,
            organization_id: record.organization_id,
            scopes: record
                .scopes
                .iter()
                .filter_map(|s| serde_json::from_value(serde_json::Value::String(s.clone())).ok())
                .collect(),
            workspace_ids: (!record.workspace_ids.is_empty()).then(|| record.workspace_ids.clone()),
            // Never above the operator's ceiling, which may be lower than the setting.
            rate_limit_per_minute: Some(super::settings::effective_rate_limit(
                record.organization_rate_limit.and_then(|v| u32::try_from(v).ok()),
                record.rate_limit_ceiling.and_then(|v| u32::try_from(v).ok()),
                state.config.rate_limit_per_minute,
            )),
            owner_user_id: record.owner_user_id,
            allowed_ips: allowed.iter().filter_map(|cidr| cidr.parse().ok()).collect(),
            expires_at: record.expires_at,
            retiring,
        }))
    }
}

impl Authenticator {
    /// A partner app key: its format, then its app (cached as admin keys are).
    async fn authenticate_app(
        &self,
        state: &AppState,
        secret: &str,
        presented: Vec<u8>,
    ) -> Result<Principal, ApiError> {
        shared::keys::parse(KeyKind::PartnerApp, secret).map_err(|_| ApiError::Unauthorized("invalid app key"))?;
        let record = match self.keys.get_app(&presented) {
            Some(record) => record,
            None => {
                let epoch = self.keys.epoch();
                let client = state.pool.get().await?;
                let statement = client.prepare_cached(super::key_cache::APP_LOOKUP).await?;
                let row = client
                    .query_opt(&statement, &[&presented])
                    .await?
                    .ok_or(ApiError::Unauthorized("invalid app key"))?;
                let record = AppRecord::from_row(&row)?;
                self.keys.put_app(presented, record.clone(), epoch);
                record
            }
        };
        if record.revoked {
            return Err(ApiError::Unauthorized("this app is revoked"));
        }
        Ok(Principal::App(AppPrincipal { id: record.id, kind: record.kind }))
    }
}

/// Whether `secret` has the shape of a partner app key (its prefix; the rest is checked
/// on lookup).
fn is_app_key(secret: &str) -> bool {
    secret.starts_with(KeyKind::PartnerApp.prefix()) && secret[KeyKind::PartnerApp.prefix().len()..].starts_with('_')
}

/// The key presented in `Authorization`, if any.
fn credentials(headers: &HeaderMap) -> Option<Result<String, ApiError>> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    let malformed = || ApiError::Unauthorized("malformed Authorization header");
    // Two credentials: which one a proxy or the client meant is anyone's guess.
    if values.next().is_some() {
        return Some(Err(ApiError::Unauthorized("more than one Authorization header")));
    }
    let Ok(value) = value.to_str() else { return Some(Err(malformed())) };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    let secret = if scheme.eq_ignore_ascii_case("bearer") {
        Some(rest.to_owned())
    } else if scheme.eq_ignore_ascii_case("basic") {
        base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|pair| match pair.split_once(':') {
                Some((user, "")) => Some(user.to_owned()),
                _ => None,
            })
    } else {
        None
    };
    Some(secret.filter(|s| !s.is_empty() && s.len() <= 512).ok_or_else(malformed))
}

/// The outcome of authentication when it failed; kept for the `Principal` extractor.
#[derive(Clone)]
struct AuthFailure {
    status: StatusCode,
    message: &'static str,
}

pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let ip = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let Some(presented) = credentials(request.headers()) else {
        // No credentials fail only where the route demands a principal: its 401 counts.
        let response = next.run(request).await;
        if response.status() == StatusCode::UNAUTHORIZED {
            state.rate_limiter.authentication_failed(ip);
        }
        return response;
    };
    // The operator key costs one hash and no lookup, so it passes the gate below: the
    // failures of others sharing its address never lock the operator (or instances) out.
    let operator = matches!(&presented, Ok(secret) if state.auth.is_operator(secret));
    if !operator {
        // An address past its failures is refused before the key costs a lookup.
        let gate = state.rate_limiter.may_authenticate(ip, state.config.auth_failures_per_minute);
        if !gate.allowed {
            return ApiError::TooManyFailedAuthentications { retry_after_seconds: gate.reset_seconds }.into_response();
        }
    }
    let partner_route = request.uri().path().starts_with(PARTNER_PREFIX);
    let outcome = match presented {
        Ok(_) if operator => Ok(Principal::Operator),
        Err(error) => Err(error),
        // Never looked up where it cannot authenticate.
        Ok(secret) if is_app_key(&secret) && !partner_route => {
            Err(ApiError::Unauthorized("a partner app key authenticates on /v1/partner/* only"))
        }
        Ok(secret) => state.auth.authenticate(&state, &secret, ip).await,
    };
    let principal = match outcome {
        Ok(principal) => principal,
        Err(ApiError::Unauthorized(message)) => {
            state.rate_limiter.authentication_failed(ip);
            request.extensions_mut().insert(AuthFailure { status: StatusCode::UNAUTHORIZED, message });
            return next.run(request).await;
        }
        // A key refused for where it is used from, or a database outage: answer now.
        Err(error) => return error.into_response(),
    };
    let limit = match &principal {
        Principal::Key(key) => key.rate_limit_per_minute.unwrap_or(state.config.rate_limit_per_minute),
        Principal::Operator | Principal::App(_) => state.config.rate_limit_per_minute,
    };
    let decision = state.rate_limiter.check(&principal.subject(), limit);
    if let Principal::Key(key) = &principal {
        state.usage.touch(key.id);
    }
    let mut response = if decision.allowed {
        let counted = match &principal {
            Principal::Key(key) => Some((key.organization_id, super::usage::workspace_in_path(request.uri().path()))),
            Principal::Operator | Principal::App(_) => None,
        };
        request.extensions_mut().insert(principal);
        let response = next.run(request).await;
        // Admin requests of an organization's keys count for its usage; for the workspace
        // the path names only when it was answered (so it is one the key may see).
        if let Some((organization_id, workspace_id)) = counted {
            let workspace_id = workspace_id.filter(|_| response.status().is_success());
            state.usage.admin_request(organization_id, workspace_id);
        }
        response
    } else {
        ApiError::RateLimited { retry_after_seconds: decision.reset_seconds }.into_response()
    };
    super::rate_limit::write_headers(&decision, response.headers_mut());
    response
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        match parts.extensions.get::<Principal>() {
            // Only the partner routes take an app, through `AppPrincipal`.
            Some(Principal::App(_)) => {
                Err(ApiError::Unauthorized("a partner app key authenticates on /v1/partner/* only"))
            }
            Some(principal) => Ok(principal.clone()),
            None => Err(auth_failure(parts)),
        }
    }
}

/// Why a request carries no principal: its failed authentication, or no credentials.
fn auth_failure(parts: &Parts) -> ApiError {
    match parts.extensions.get::<AuthFailure>() {
        Some(failure) if failure.status == StatusCode::UNAUTHORIZED => ApiError::Unauthorized(failure.message),
        _ => ApiError::Unauthorized("missing credentials: send `Authorization: Bearer <key>`"),
    }
}

/// The partner app calling a `/v1/partner/*` route. The operator and admin keys are not
/// apps: 403.
impl FromRequestParts<AppState> for AppPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        match parts.extensions.get::<Principal>() {
            Some(Principal::App(app)) => Ok(*app),
            Some(_) => Err(ApiError::Forbidden(
                "this route takes a partner app key; the operator and admin keys are not apps".into(),
            )),
            None => Err(auth_failure(parts)),
        }
    }
}

/// The client's address, as seen on the connection.
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}
