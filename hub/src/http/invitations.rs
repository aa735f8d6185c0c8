//! Invitations: `POST/GET /v1/workspaces/{id}/invitations`, `DELETE /v1/invitations/{id}`,
//! and the token-authenticated `POST /v1/invitations/accept|decline`.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use shared::Metadata;
use shared::domain::Aggregate;
use shared::domain::user::{User, UserCommand};
use shared::domain::workspace::{Workspace, WorkspaceCommand};
use shared::events::workspace::Role;
use shared::keys::{GeneratedKey, KeyKind};
use shared::metadata::{Actor, ActorType};
use shared::scope::Scope;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::auth::ClientIp;
use super::context::Ctx;
use super::cursor::{Keyset, Listing, SortKind};
use super::error::{ApiError, Problem};
use super::extract::{Json, Path, Query};
use super::middleware::RequestId;
use super::paged::{self, paged};
use super::pagination::{Count, Page, SortOrder};
use super::sql::Filter;
use crate::commands;
use crate::mail::{Email, html_escape};
use crate::store::{AppendError, Commit, ExpectedVersion, StreamAppend};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(invite, list_invitations))
        .routes(routes!(count_invitations))
        .routes(routes!(revoke_invitation))
        .routes(routes!(accept_invitation))
        .routes(routes!(decline_invitation))
}

/// Default and longest lifetime of an invitation.
const DEFAULT_TTL_SECONDS: i64 = 7 * 24 * 3600;
pub(super) const MAX_TTL_SECONDS: i64 = 30 * 24 * 3600;

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceRef {
    pub id: Uuid,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationView {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    /// `pending`, `accepted`, `declined`, `revoked` or `expired`.
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub workspace: WorkspaceRef,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitation {
    pub email: String,
    pub role: Role,
    /// Lifetime of the invitation (default 7 days, at most 30 days).
    pub expires_in_seconds: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationToken {
    pub token: String,
    /// The new user's display name, when accepting creates the user.
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationAnswer {
    pub invitation_id: Uuid,
    pub workspace_id: Uuid,
    pub status: String,
    pub user_id: Option<Uuid>,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Declined,
    Revoked,
    Expired,
}

impl InvitationStatus {
    pub(super) fn bind(self, filter: &mut Filter) {
        let status = match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        };
        filter.bind(&format!("{STATUS_SQL} = $?"), Box::new(status));
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InvitationQuery {
    page: Option<u32>,
    page_size: Option<u32>,
    /// `pagination.next_cursor` of the previous page (same filters and sort); instead of `page`.
    cursor: Option<String>,
    #[param(inline)]
    sort_order: Option<SortOrder>,
    #[param(inline)]
    status: Option<InvitationStatus>,
}

paged!(InvitationQuery);

/// The status as shown: the stored one, or `expired` (text, beyond the column's type).
pub(super) const STATUS_SQL: &str =
    "CASE WHEN i.status = 'pending' AND i.expires_at <= now() THEN 'expired' ELSE i.status::text END";

pub(super) const SELECT: &str = "SELECT i.id, i.email, i.role, \
     CASE WHEN i.status = 'pending' AND i.expires_at <= now() THEN 'expired' ELSE i.status::text END AS status, \
     i.expires_at, i.created_at, w.id AS workspace_id, w.name AS workspace_name \
     FROM invitations i JOIN workspaces w ON w.id = i.workspace_id";

impl InvitationView {
    /// A row of [`SELECT`].
    pub(super) fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            role: row.try_get("role")?,
            status: row.try_get("status")?,
            expires_at: row.try_get("expires_at")?,
            created_at: row.try_get("created_at")?,
            workspace: WorkspaceRef { id: row.try_get("workspace_id")?, name: row.try_get("workspace_name")? },
        })
    }
}

fn invitation_email(public_url: &str, workspace: &str, email: &str, role: Role, token: &str) -> Email {
    let accept = format!("{public_url}/invitations/accept?token={token}");
    let decline = format!("{public_url}/invitations/decline?token={token}");
    let role = role.as_str();
    Email {
        kind: crate::columns::EmailKind::Invitation,
        recipient: email.to_owned(),
        subject: format!("You are invited to join {workspace}"),
        text: format!(
            "You have been invited to join the workspace \"{workspace}\" as {role}.\n\n\
             Accept: {accept}\nDecline: {decline}\n\nIf you did not expect this invitation, ignore this email.\n"
        ),
        html: format!(
            "<p>You have been invited to join the workspace <strong>{}</strong> as {role}.</p>\
             <p><a href=\"{accept}\">Accept</a> · <a href=\"{decline}\">Decline</a></p>\
             <p>If you did not expect this invitation, ignore this email.</p>",
            html_escape(workspace)
        ),
    }
}

/// Invite someone to a workspace; the invitee receives an email with accept and decline links.
#[utoipa::path(post, path = "/v1/workspaces/{id}/invitations", tag = "users", params(("id" = Uuid, Path)),
    request_body = CreateInvitation,
    responses((status = 201, description = "Created", body = InvitationView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn invite(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(workspace_id): Path<Uuid>,
    Json(body): Json<CreateInvitation>,
) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::UsersWrite)?;
    let workspace = super::workspaces::find(&state, &ctx.principal, workspace_id).await?;
    let ttl = body.expires_in_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::invalid(
            "expires_in_seconds",
            "range",
            format!("expires_in_seconds must be between 1 and {MAX_TTL_SECONDS}"),
        ));
    }
    let email = shared::domain::values::email("email", &body.email)?;
    let token = GeneratedKey::generate(KeyKind::InvitationToken);
    let now = Utc::now();
    let invitation_id = Uuid::now_v7();
    let command = WorkspaceCommand::Invite {
        invitation_id,
        email: email.clone(),
        role: body.role,
        token_hash: state.auth.hasher().hash(token.expose()),
        expires_at: now + Duration::seconds(ttl),
        now,
    };
    commands::execute_with::<Workspace>(
        &state.store,
        workspace_id,
        ctx.if_match,
        &ctx.metadata,
        |w| w.decide(command.clone()),
        || {
            vec![
                invitation_email(&state.config.public_url, &workspace.name, &email, body.role, token.expose())
                    .outbox_step_of(workspace.organization_id),
            ]
        },
    )
    .await?;
    state.mail_wake.notify_one();
    let client = state.pool.get().await?;
    let row = client.query_one(&format!("{SELECT} WHERE i.id = $1"), &[&invitation_id]).await?;
    Ok((StatusCode::CREATED, axum::Json(InvitationView::from_row(&row)?)).into_response())
}

impl InvitationQuery {
    pub(crate) fn keyset(&self) -> Keyset {
        Keyset { sort: "i.created_at", kind: SortKind::Time, id: "i.id", order: self.sort_order.unwrap_or_default() }
    }
}

/// The list query of a page of a workspace's invitations.
pub(crate) fn list_sql(workspace_id: Uuid, query: &InvitationQuery, listing: &Listing) -> (String, Filter) {
    let mut filter = filter(workspace_id, query);
    (listing.sql(SELECT, &mut filter), filter)
}

pub(crate) fn count_sql(workspace_id: Uuid, query: &InvitationQuery) -> (String, Filter) {
    let filter = filter(workspace_id, query);
    (format!("SELECT count(*) FROM invitations i {}", filter.where_sql()), filter)
}

fn filter(workspace_id: Uuid, query: &InvitationQuery) -> Filter {
    let mut filter = Filter::default();
    filter.bind("i.workspace_id = $?", Box::new(workspace_id));
    if let Some(status) = query.status {
        status.bind(&mut filter);
    }
    filter
}

/// A workspace's invitations.
#[utoipa::path(get, path = "/v1/workspaces/{id}/invitations", tag = "users", params(("id" = Uuid, Path), InvitationQuery),
    responses((status = 200, description = "OK", body = Page<InvitationView>), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn list_invitations(
    State(state): State<AppState>,
    ctx: Ctx,
    uri: Uri,
    Path(workspace_id): Path<Uuid>,
    Query(query): Query<InvitationQuery>,
) -> Result<axum::Json<Page<InvitationView>>, ApiError> {
    ctx.principal.require(Scope::UsersRead)?;
    super::workspaces::find(&state, &ctx.principal, workspace_id).await?;
    let listing = Listing::of(&state.master_key, &ctx.principal, &uri, &query, query.keyset())?;
    listing.fetch(&state.pool, list_sql(workspace_id, &query, &listing), "id", InvitationView::from_row, &uri).await
}

/// Count a workspace's invitations.
#[utoipa::path(get, path = "/v1/workspaces/{id}/invitations/count", tag = "users", params(("id" = Uuid, Path), InvitationQuery),
    responses((status = 200, description = "OK", body = Count), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn count_invitations(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(workspace_id): Path<Uuid>,
    Query(query): Query<InvitationQuery>,
) -> Result<axum::Json<Count>, ApiError> {
    ctx.principal.require(Scope::UsersRead)?;
    super::workspaces::find(&state, &ctx.principal, workspace_id).await?;
    paged::count(&state.pool, &query, || {
        let filter = filter(workspace_id, &query);
        Ok((format!("SELECT count(*) FROM invitations i {}", filter.where_sql()), filter))
    })
    .await
}

/// Revoke a pending invitation: its token stops working.
#[utoipa::path(delete, path = "/v1/invitations/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 204, description = "No content"), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn revoke_invitation(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(invitation_id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    ctx.principal.require(Scope::UsersWrite)?;
    let client = state.pool.get().await?;
    let workspace_id: Uuid = client
        .query_opt("SELECT workspace_id FROM invitations WHERE id = $1", &[&invitation_id])
        .await?
        .ok_or(ApiError::NotFound("invitation"))?
        .try_get("workspace_id")?;
    drop(client);
    super::workspaces::find(&state, &ctx.principal, workspace_id)
        .await
        .map_err(|_| ApiError::NotFound("invitation"))?;
    commands::execute::<Workspace>(&state.store, workspace_id, ctx.if_match, &ctx.metadata, |w| {
        w.decide(WorkspaceCommand::RevokeInvitation { invitation_id })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The invitation a presented token belongs to: (id, workspace, organization, email, role).
async fn by_token(state: &AppState, token: &str) -> Result<(Uuid, Uuid, Uuid, String, Role), ApiError> {
    shared::keys::parse(KeyKind::InvitationToken, token).map_err(|_| ApiError::BadRequest {
        code: "malformed_token",
        detail: "the token is not an invitation token".into(),
    })?;
    let hash = state.auth.hasher().hash(token);
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT i.id, i.workspace_id, w.organization_id, i.email, i.role FROM invitations i \
             JOIN workspaces w ON w.id = i.workspace_id WHERE i.token_hash = $1 AND w.status <> 'deleted'",
            &[&hash],
        )
        .await?
        .ok_or(ApiError::NotFound("invitation"))?;
    Ok((
        row.try_get("id")?,
        row.try_get("workspace_id")?,
        row.try_get("organization_id")?,
        row.try_get("email")?,
        row.try_get("role")?,
    ))
}

fn token_metadata(ip: ClientIp, request_id: Option<axum::Extension<RequestId>>) -> Metadata {
    Metadata {
        actor: Actor { kind: ActorType::User, id: None, ip: ip.0.map(|ip| ip.to_string()) },
        request_id: request_id.map(|r| r.0.0.clone()),
        idempotency_key: None,
        traceparent: None,
    }
}

/// Accept an invitation (the token authenticates): the invitee becomes a member with the
/// invited role, and a user of the organization if new.
#[utoipa::path(post, path = "/v1/invitations/accept", tag = "users", request_body = InvitationToken, security(()),
    responses((status = 200, description = "OK", body = InvitationAnswer), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn accept_invitation(
    State(state): State<AppState>,
    ip: ClientIp,
    request_id: Option<axum::Extension<RequestId>>,
    Json(body): Json<InvitationToken>,
) -> Result<axum::Json<InvitationAnswer>, ApiError> {
    let (invitation_id, workspace_id, organization_id, email, role) = by_token(&state, &body.token).await?;
    let mut metadata = token_metadata(ip, request_id);
    for _ in 0..5 {
        let client = state.pool.get().await?;
        let existing: Option<Uuid> = client
            .query_opt(
                "SELECT id FROM users WHERE organization_id = $1 AND lower(email) = lower($2) AND status <> 'deleted'",
                &[&organization_id, &email],
            )
            .await?
            .map(|r| r.try_get("id"))
            .transpose()?;
        drop(client);
        let user_id = existing.unwrap_or_else(Uuid::now_v7);
        metadata.actor.id = Some(user_id.to_string());
        let (workspace, version) = commands::load::<Workspace>(&state.store, workspace_id).await?;
        let events = workspace.decide(WorkspaceCommand::Accept { invitation_id, user_id, now: Utc::now() })?;
        let mut appends = vec![StreamAppend {
            stream_id: Workspace::stream_id(workspace_id),
            expected: ExpectedVersion::Exact(version),
            events: commands::encode(&events, &metadata)?,
        }];
        if existing.is_none() {
            let name = body.name.clone().unwrap_or_else(|| email.split('@').next().unwrap_or("user").to_owned());
            let created =
                User::default().decide(UserCommand::Create { organization_id, email: email.clone(), name })?;
            appends.push(StreamAppend {
                stream_id: User::stream_id(user_id),
                expected: ExpectedVersion::NoStream,
                events: commands::encode(&created, &metadata)?,
            });
        }
        match state.store.commit(Commit { appends, extra: Vec::new() }).await {
            Ok(_) => {
                return Ok(axum::Json(InvitationAnswer {
                    invitation_id,
                    workspace_id,
                    status: "accepted".into(),
                    user_id: Some(user_id),
                    role,
                }));
            }
            // Another accept or a concurrent change of the workspace, or the same new user
            // created by a concurrent accept: decide again (the user now exists).
            Err(AppendError::Conflict { .. }) => continue,
            Err(error) if error.constraint() == Some("users_email") => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ApiError::Conflict {
        code: "concurrent_modification",
        detail: "the workspace changed concurrently; retry".into(),
    })
}

/// Decline an invitation (the token authenticates).
#[utoipa::path(post, path = "/v1/invitations/decline", tag = "users", request_body = InvitationToken, security(()),
    responses((status = 200, description = "OK", body = InvitationAnswer), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn decline_invitation(
    State(state): State<AppState>,
    ip: ClientIp,
    request_id: Option<axum::Extension<RequestId>>,
    Json(body): Json<InvitationToken>,
) -> Result<axum::Json<InvitationAnswer>, ApiError> {
    let (invitation_id, workspace_id, _, _, role) = by_token(&state, &body.token).await?;
    let metadata = token_metadata(ip, request_id);
    commands::execute::<Workspace>(&state.store, workspace_id, None, &metadata, |w| {
        w.decide(WorkspaceCommand::Decline { invitation_id, now: Utc::now() })
    })
    .await?;
    Ok(axum::Json(InvitationAnswer { invitation_id, workspace_id, status: "declined".into(), user_id: None, role }))
}
