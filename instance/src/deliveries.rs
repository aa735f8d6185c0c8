//! The webhook deliveries of the token's workspace: `GET /v1/runtime/deliveries` (and its
//! `/count`), paginated like every list, and `POST /v1/runtime/deliveries/{id}/retry`,
//! which puts a failed delivery back in the outbox, due now, with a fresh round of the
//! retry schedule.
//!
//! Lists go in creation order (ids are UUIDv7), `page`/`page_size` or `cursor` (the last
//! id seen and the page it leads to, tied to the filter and sort it was issued for).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::ingest::{DeliveryStatus, Refused};
use crate::runtime::{RuntimeState, authenticate, problem};

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;
/// Page numbers reach this many items at most (`page × page_size`); a cursor goes further.
pub const MAX_DEPTH: u64 = 10_000;
/// A longer `cursor` is not one this instance issued.
const MAX_CURSOR_LEN: usize = 512;

/// A delivery's status, as filters and bodies spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Succeeded,
    Failed,
}

impl From<Status> for DeliveryStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Pending => Self::Pending,
            Status::Succeeded => Self::Succeeded,
            Status::Failed => Self::Failed,
        }
    }
}

impl From<DeliveryStatus> for Status {
    fn from(status: DeliveryStatus) -> Self {
        match status {
            DeliveryStatus::Pending => Self::Pending,
            DeliveryStatus::Succeeded => Self::Succeeded,
            DeliveryStatus::Failed => Self::Failed,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    #[default]
    CreatedAt,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

/// The list's query.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// Only the deliveries with this status.
    #[param(inline)]
    pub status: Option<Status>,
    /// The page (from 1); `page × page_size` at most 10000, past that use `cursor`.
    #[param(minimum = 1, maximum = 10000)]
    pub page: Option<u32>,
    /// Items per page.
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
    /// Creation order (the only order).
    #[param(inline)]
    pub sort_by: Option<SortBy>,
    #[param(inline)]
    pub sort_order: Option<SortOrder>,
    /// `pagination.next_cursor` of the previous page, with the same filter and sort.
    #[param(max_length = 512)]
    pub cursor: Option<String>,
}

/// The count's query.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CountQuery {
    /// Only the deliveries with this status.
    #[param(inline)]
    pub status: Option<Status>,
}

/// A webhook delivery: one interaction to one webhook URI.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    /// The interaction delivered, also the request's `webhook-id`.
    pub interaction_id: Uuid,
    pub url: String,
    pub status: Status,
    /// Every attempt made, the successful one included.
    pub attempts: i32,
    /// The receiver's status code at the last attempt (none when no answer came).
    pub last_status_code: Option<i32>,
    /// Why the last attempt did not succeed.
    pub last_error: Option<String>,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PageInfo {
    pub page: u32,
    pub page_size: u32,
    /// Opaque; `?cursor=<next_cursor>` with the same filter and sort returns the next
    /// page. Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Link {
    pub rel: &'static str,
    pub href: String,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    pub pagination: PageInfo,
    pub links: Vec<Link>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Count {
    pub count: i64,
}

fn unavailable() -> Response {
    problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the instance database is unavailable")
}

fn invalid(code: &'static str, detail: &str) -> Refused {
    Refused { status: StatusCode::UNPROCESSABLE_ENTITY, code, detail: detail.to_owned() }
}

fn bad_query(rejection: &QueryRejection) -> Response {
    // serde's message names the parameter (never more than the value's kind).
    let message = rejection.body_text();
    let message = message.strip_prefix("Failed to deserialize query string: ").unwrap_or(&message);
    invalid("validation_failed", &format!("invalid query: {}", message.chars().take(200).collect::<String>()))
        .into_response()
}

const COLUMNS: &str = "id, interaction_id, url, status, attempts, last_status_code, last_error, next_attempt_at, \
                       created_at, updated_at";

fn delivery(row: &tokio_postgres::Row) -> Delivery {
    let status: Status = row.get::<_, DeliveryStatus>("status").into();
    Delivery {
        id: row.get("id"),
        interaction_id: row.get("interaction_id"),
        url: row.get("url"),
        status,
        attempts: row.get("attempts"),
        last_status_code: row.get("last_status_code"),
        last_error: row.get("last_error"),
        next_attempt_at: (status == Status::Pending).then(|| row.get("next_attempt_at")),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

/// Where a cursor leads: after `after`, the page `page`, for the list asked as `list`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Cursor {
    after: Uuid,
    page: u32,
    list: String,
}

/// What a cursor is tied to: the filter and the sort.
fn list_key(status: Option<Status>, order: SortOrder) -> String {
    format!("{status:?}|{order:?}")
}

fn encode(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).expect("a cursor serializes"))
}

fn decode(text: &str, list: &str) -> Result<Cursor, Refused> {
    let refused = || {
        invalid(
            "invalid_cursor",
            "the cursor is malformed or was issued for another filter or sort; start again without it",
        )
    };
    if text.len() > MAX_CURSOR_LEN {
        return Err(refused());
    }
    let cursor: Cursor =
        URL_SAFE_NO_PAD.decode(text).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).ok_or_else(refused)?;
    if cursor.list != list || cursor.page == 0 {
        return Err(refused());
    }
    Ok(cursor)
}

/// Lists the token's workspace's deliveries.
#[utoipa::path(
    get,
    path = "/v1/runtime/deliveries",
    tag = "runtime",
    security(("bearer" = [])),
    params(DeliveryQuery),
    responses(
        (status = 200, description = "A page of deliveries, oldest first unless `sort_order=desc`", body = DeliveryPage),
        (status = 401, description = "No token, or a malformed, expired, foreign or no longer valid one (`unauthorized`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 403, description = "The workspace is archived (`workspace_archived`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 422, description = "A bad query parameter (`validation_failed`), a page past 10000 items (`page_too_deep`) or a foreign cursor (`invalid_cursor`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 429, description = "Too many failed authentications from this address (`too_many_failed_authentications`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 503, description = "The instance's database is unavailable (`unavailable`)", content_type = "application/problem+json", body = crate::openapi::Problem),
    )
)]
pub async fn list(
    State(state): State<Arc<RuntimeState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Response {
    let (workspace, _) = match authenticate(&state, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection),
    };
    match page(&state, workspace, &query, &uri).await {
        Ok(page) => Json(page).into_response(),
        Err(refused) => refused.into_response(),
    }
}

async fn page(
    state: &RuntimeState,
    workspace: Uuid,
    query: &DeliveryQuery,
    uri: &Uri,
) -> Result<DeliveryPage, Refused> {
    let page_size = query.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(invalid("validation_failed", &format!("page_size must be between 1 and {MAX_PAGE_SIZE}")));
    }
    let order = query.sort_order.unwrap_or_default();
    let list = list_key(query.status, order);
    let (page, after) = match (&query.cursor, query.page) {
        (Some(_), Some(_)) => return Err(invalid("validation_failed", "give either `page` or `cursor`, not both")),
        (Some(text), None) => {
            let cursor = decode(text, &list)?;
            (cursor.page, Some(cursor.after))
        }
        (None, page) => {
            let page = page.unwrap_or(1);
            if page == 0 {
                return Err(invalid("validation_failed", "page must be 1 or more"));
            }
            if u64::from(page) * u64::from(page_size) > MAX_DEPTH {
                return Err(invalid(
                    "page_too_deep",
                    &format!(
                        "pages reach {MAX_DEPTH} items at most; walk further with `cursor` (`pagination.next_cursor`)"
                    ),
                ));
            }
            (page, None)
        }
    };
    let status: Option<DeliveryStatus> = query.status.map(Into::into);
    let (direction, past) = match order {
        SortOrder::Asc => ("ASC", ">"),
        SortOrder::Desc => ("DESC", "<"),
    };
    let offset = if after.is_some() { 0 } else { i64::from(page - 1) * i64::from(page_size) };
    let sql = format!(
        "SELECT {COLUMNS} FROM deliveries WHERE workspace_id = $1 AND ($2::delivery_status IS NULL OR status = $2) \
         AND ($3::uuid IS NULL OR id {past} $3) ORDER BY id {direction} LIMIT $4 OFFSET $5"
    );
    let unavailable = || Refused {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "unavailable",
        detail: "the instance database is unavailable".into(),
    };
    let client = state.pool.get().await.map_err(|_| unavailable())?;
    let rows = client
        .query(&sql, &[&workspace, &status, &after, &(i64::from(page_size) + 1), &offset])
        .await
        .map_err(|_| unavailable())?;
    let more = rows.len() > page_size as usize;
    let items: Vec<Delivery> = rows.iter().take(page_size as usize).map(delivery).collect();
    let next_cursor = more
        .then(|| items.last().map(|last| encode(&Cursor { after: last.id, page: page + 1, list: list.clone() })))
        .flatten();
    let mut links = vec![Link { rel: "self", href: current(uri) }];
    if page > 1 && u64::from(page - 1) * u64::from(page_size) <= MAX_DEPTH {
        links.push(Link { rel: "previous", href: href(uri, "page", &(page - 1).to_string()) });
    }
    if let Some(cursor) = &next_cursor {
        let next = if after.is_none() && u64::from(page + 1) * u64::from(page_size) <= MAX_DEPTH {
            href(uri, "page", &(page + 1).to_string())
        } else {
            href(uri, "cursor", cursor)
        };
        links.push(Link { rel: "next", href: next });
    }
    Ok(DeliveryPage { items, pagination: PageInfo { page, page_size, next_cursor }, links })
}

/// `uri` with its paging (`page`, `cursor`) replaced by `name=value`.
fn href(uri: &Uri, name: &str, value: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        if key != "page" && key != "cursor" {
            query.append_pair(&key, &value);
        }
    }
    query.append_pair(name, value);
    format!("{}?{}", uri.path(), query.finish())
}

fn current(uri: &Uri) -> String {
    uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned())
}

/// Counts the token's workspace's deliveries.
#[utoipa::path(
    get,
    path = "/v1/runtime/deliveries/count",
    tag = "runtime",
    security(("bearer" = [])),
    params(CountQuery),
    responses(
        (status = 200, description = "How many deliveries match", body = Count),
        (status = 401, description = "No token, or a malformed, expired, foreign or no longer valid one (`unauthorized`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 403, description = "The workspace is archived (`workspace_archived`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 422, description = "A bad query parameter (`validation_failed`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 429, description = "Too many failed authentications from this address (`too_many_failed_authentications`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 503, description = "The instance's database is unavailable (`unavailable`)", content_type = "application/problem+json", body = crate::openapi::Problem),
    )
)]
pub async fn count(
    State(state): State<Arc<RuntimeState>>,
    headers: HeaderMap,
    query: Result<Query<CountQuery>, QueryRejection>,
) -> Response {
    let (workspace, _) = match authenticate(&state, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection),
    };
    let status: Option<DeliveryStatus> = query.status.map(Into::into);
    let counted = async {
        let client = state.pool.get().await.ok()?;
        let row = client
            .query_one(
                "SELECT count(*) FROM deliveries WHERE workspace_id = $1 \
                 AND ($2::delivery_status IS NULL OR status = $2)",
                &[&workspace, &status],
            )
            .await
            .ok()?;
        Some(row.get::<_, i64>(0))
    };
    match counted.await {
        Some(count) => Json(Count { count }).into_response(),
        None => unavailable(),
    }
}

/// Puts a failed delivery back in the outbox, due now.
#[utoipa::path(
    post,
    path = "/v1/runtime/deliveries/{id}/retry",
    tag = "runtime",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The delivery's id")),
    responses(
        (status = 202, description = "Pending again and due now, with a fresh round of the retry schedule (a pending delivery not in flight is made due now)", body = Delivery),
        (status = 401, description = "No token, or a malformed, expired, foreign or no longer valid one (`unauthorized`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 403, description = "The workspace is archived (`workspace_archived`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 404, description = "No such delivery in the token's workspace (`not_found`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 409, description = "The delivery succeeded: a success is never repeated (`delivery_succeeded`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 422, description = "The id is not a UUID (`validation_failed`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 429, description = "Too many failed authentications from this address (`too_many_failed_authentications`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 503, description = "The instance's database is unavailable (`unavailable`)", content_type = "application/problem+json", body = crate::openapi::Problem),
    )
)]
pub async fn retry(
    State(state): State<Arc<RuntimeState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let (workspace, _) = match authenticate(&state, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(id) = id.ok().and_then(|Path(id)| Uuid::parse_str(&id).ok()) else {
        return invalid("validation_failed", "the delivery id must be a UUID").into_response();
    };
    let retried = async {
        let client = state.pool.get().await?;
        // The delivery starts a new round of the schedule: its next attempt is the round's
        // first, or, while a sender holds it (its request in flight), the attempt in flight
        // is (see `webhooks::recorder::RECORD`). A pending one not in flight is made due now.
        let sql = format!(
            "UPDATE deliveries SET \
               round_started_at_attempt = CASE WHEN status = 'pending' AND claimed_until > now() \
                 THEN attempts - 1 ELSE attempts END, \
               next_attempt_at = CASE WHEN claimed_until > now() THEN next_attempt_at ELSE now() END, \
               status = 'pending', updated_at = now() \
             WHERE id = $1 AND workspace_id = $2 AND status <> 'succeeded' RETURNING {COLUMNS}"
        );
        if let Some(row) = client.query_opt(&sql, &[&id, &workspace]).await? {
            return anyhow::Ok(Ok(delivery(&row)));
        }
        let exists = client
            .query_opt("SELECT 1 FROM deliveries WHERE id = $1 AND workspace_id = $2", &[&id, &workspace])
            .await?;
        anyhow::Ok(Err(exists.is_some()))
    };
    match retried.await {
        Ok(Ok(delivery)) => {
            state.deliveries_wake.notify_one();
            (StatusCode::ACCEPTED, Json(delivery)).into_response()
        }
        Ok(Err(true)) => {
            problem(StatusCode::CONFLICT, "delivery_succeeded", "the delivery succeeded; a success is never repeated")
        }
        Ok(Err(false)) => problem(StatusCode::NOT_FOUND, "not_found", "no such delivery"),
        Err(_) => unavailable(),
    }
}
