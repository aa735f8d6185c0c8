//! `ApiError`: every failure a handler can return, each with a status and stable `code`,
//! rendered as RFC 9457 problem details. Internal errors stay opaque to the client; the
//! `problems` middleware logs them.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shared::domain::DomainError;

use crate::store::{AppendError, ReadError};

pub const PROBLEM_JSON: &str = shared::problem::CONTENT_TYPE;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub name: String,
    pub constraint: String,
    pub detail: String,
}

/// The body of every error response (RFC 9457).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A stable, machine-readable error code.
    pub code: String,
    /// The `Request-Id` of the request (filled in by the `problems` middleware).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: Option<String>) -> Self {
        Self {
            kind: shared::problem::type_uri(code),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            request_id: None,
            errors: Vec::new(),
        }
    }

    pub fn into_response_with(self, status: StatusCode) -> Response {
        let mut response = (status, axum::Json(self)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// The cause of a 500, attached to the response for the middleware to log.
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{detail}")]
    Denied { code: &'static str, detail: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("the resource changed since the version given in If-Match")]
    PreconditionFailed,
    #[error("{detail}")]
    Gone { code: &'static str, detail: String },
    #[error("request body exceeds the limit")]
    PayloadTooLarge,
    /// The command would record an event over 256 KiB.
    #[error("{0}")]
    EventTooLarge(String),
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("{detail}")]
    Validation { detail: String, errors: Vec<FieldError> },
    /// A well-formed request that breaks a rule of the resource (422 with its own code).
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    #[error("rate limit exceeded")]
    RateLimited { retry_after_seconds: u64 },
    /// A limit of the organization's own, not the key's (429 with its own code).
    #[error("{detail}")]
    Throttled { code: &'static str, detail: String, retry_after_seconds: u64 },
    /// The client's address is past its failed authentications (not the key's own limit).
    #[error("{}", shared::rate_limit::TOO_MANY_FAILURES_DETAIL)]
    TooManyFailedAuthentications { retry_after_seconds: u64 },
    #[error("service unavailable")]
    Unavailable,
    /// A third party the request needed did not answer, or not usefully.
    #[error("{detail}")]
    BadGateway { code: &'static str, detail: String },
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(name: &str, constraint: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self::Validation {
            detail: detail.clone(),
            errors: vec![FieldError { name: name.to_owned(), constraint: constraint.to_owned(), detail }],
        }
    }

    /// A create or move that would put a workspace below the deepest level of a tree.
    pub fn too_deep() -> Self {
        Self::Unprocessable {
            code: "too_deep",
            detail: format!(
                "a workspace tree is at most {} levels deep (a root is level 1)",
                shared::domain::workspace::MAX_DEPTH
            ),
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::Denied { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::Gone { .. } => StatusCode::GONE,
            Self::PayloadTooLarge | Self::EventTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation { .. } | Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } | Self::TooManyFailedAuthentications { .. } | Self::Throttled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::BadRequest { code, .. }
            | Self::Denied { code, .. }
            | Self::Conflict { code, .. }
            | Self::Gone { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::Throttled { code, .. }
            | Self::BadGateway { code, .. } => code,
            Self::PreconditionFailed => "precondition_failed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::EventTooLarge(_) => "event_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Validation { .. } => "validation_failed",
            Self::RateLimited { .. } => "rate_limited",
            Self::TooManyFailedAuthentications { .. } => shared::rate_limit::TOO_MANY_FAILURES_CODE,
            Self::Unavailable => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Self::Internal(_) => None,
            Self::Unavailable => Some("the service is temporarily unavailable; retry later".to_owned()),
            other => Some(other.to_string()),
        };
        let mut problem = Problem::new(status, self.code(), detail);
        if let Self::Validation { errors, .. } = &self {
            problem.errors.clone_from(errors);
        }
        let mut response = problem.into_response_with(status);
        let headers = response.headers_mut();
        match &self {
            Self::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"admin-api\""));
            }
            Self::RateLimited { retry_after_seconds }
            | Self::TooManyFailedAuthentications { retry_after_seconds }
            | Self::Throttled { retry_after_seconds, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            }
            Self::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::Internal(cause) => {
                response.extensions_mut().insert(InternalCause(cause.clone()));
            }
            _ => {}
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::NotFound(what) => Self::NotFound(what),
            DomainError::Conflict { code, detail } => Self::Conflict { code, detail },
            DomainError::Invalid { field, constraint, detail } => Self::invalid(field, constraint, detail),
            DomainError::Forbidden { detail } => Self::Forbidden(detail),
            DomainError::Denied { code, detail } => Self::Denied { code, detail },
            DomainError::Gone { code, detail } => Self::Gone { code, detail },
        }
    }
}

/// Constraints hit inside the append transaction, by name: the uniqueness and tree rules.
fn constraint_error(constraint: &str) -> Option<ApiError> {
    match constraint {
        "workspaces_sibling_name" => {
            Some(ApiError::Conflict { code: "name_taken", detail: "a sibling workspace already has this name".into() })
        }
        "workspaces_no_cycle" => Some(ApiError::Conflict {
            code: "cycle",
            detail: "a workspace cannot be moved under its own descendant".into(),
        }),
        "workspaces_depth" => Some(ApiError::too_deep()),
        "workspaces_parent" => Some(ApiError::invalid("parent_id", "exists", "the parent workspace does not exist")),
        "workspaces_parent_live" => Some(ApiError::Conflict {
            code: "tree_changed",
            detail: "the parent or a child of this workspace was deleted or created concurrently; retry".into(),
        }),
        "workspaces_parent_active" => Some(ApiError::Conflict {
            code: "tree_changed",
            detail: "the parent or a child of this workspace was archived or restored concurrently; retry".into(),
        }),
        "api_keys_workspaces_live" => Some(ApiError::Conflict {
            code: "tree_changed",
            detail: "a workspace of this key was deleted concurrently; retry".into(),
        }),
        "organizations_live" => Some(ApiError::Conflict {
            code: "organization_deleted",
            detail: "the organization is being deleted or was deleted".into(),
        }),
        "apps_live" => {
            Some(ApiError::Conflict { code: "app_revoked", detail: "the partner app was deleted concurrently".into() })
        }
        "users_email" => Some(ApiError::Conflict {
            code: "email_taken",
            detail: "a user of the organization already has this email".into(),
        }),
        "outbox_invitations_per_recipient" => Some(ApiError::Throttled {
            code: "too_many_invitations",
            detail: format!(
                "the organization has sent {} invitations to this address in the past hour; try again later",
                crate::mail::NOTICES_PER_HOUR
            ),
            retry_after_seconds: 3600,
        }),
        "organizations_quota_workspaces" => Some(quota_exceeded("workspaces")),
        "organizations_quota_api_keys" => Some(quota_exceeded("API keys")),
        "organizations_quota_interaction_keys" => Some(quota_exceeded("interaction keys")),
        "organizations_quota_pending_invitations" => Some(quota_exceeded("pending invitations")),
        _ => None,
    }
}

/// A create refused by the organization's quota (migration V10).
fn quota_exceeded(what: &str) -> ApiError {
    ApiError::Conflict {
        code: "quota_exceeded",
        detail: format!("the organization has reached its quota of {what}; delete some or ask the operator for more"),
    }
}

impl From<AppendError> for ApiError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::Conflict { .. } => Self::Conflict {
                code: "concurrent_modification",
                detail: "the resource was changed concurrently; retry".into(),
            },
            AppendError::Rejected(db) => db
                .as_db_error()
                .and_then(|e| e.constraint())
                .and_then(constraint_error)
                .or_else(|| data_exception(&db))
                .unwrap_or_else(|| Self::internal(describe(&db))),
            AppendError::Taken { constraint } => {
                constraint_error(constraint).unwrap_or_else(|| Self::internal(format!("taken: {constraint}")))
            }
            AppendError::Unavailable(_) | AppendError::Closed => Self::Unavailable,
            AppendError::Invalid(detail) => Self::internal(detail),
            AppendError::TooLarge { bytes, .. } => Self::EventTooLarge(format!(
                "the change would record an event of {bytes} bytes; events are limited to {} bytes",
                shared::relayed::MAX_EVENT_BYTES
            )),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Unavailable(_) => Self::Unavailable,
            ReadError::Query(e) => e.into(),
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(_: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable
    }
}

/// A value the database refuses to store (SQLSTATE class 22: e.g. a NUL character in
/// text): the request's fault, never a 500.
fn data_exception(error: &tokio_postgres::Error) -> Option<ApiError> {
    let db = error.as_db_error()?;
    db.code().code().starts_with("22").then(|| {
        ApiError::invalid("", "storable", "the request holds a value that cannot be stored (e.g. a NUL character)")
    })
}

use crate::store::describe;

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> Self {
        if error.is_closed() || error.as_db_error().is_none() {
            return Self::Unavailable;
        }
        data_exception(&error).unwrap_or_else(|| Self::internal(describe(&error)))
    }
}

impl From<shared::DecodeError> for ApiError {
    fn from(error: shared::DecodeError) -> Self {
        Self::internal(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_over_the_limit_is_a_413_problem_with_a_stable_code() {
        let error = ApiError::from(AppendError::TooLarge { event_type: "WorkspaceUpdated".into(), bytes: 300_000 });
        assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error.code(), "event_too_large");
        assert!(error.to_string().contains("262144"), "{error}");
    }
}
