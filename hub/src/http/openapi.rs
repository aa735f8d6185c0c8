//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use std::sync::Arc;

use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Admin API",
        description = "Event-sourced Admin API for multi-tenant platforms. Every response carries `Request-Id` \
            (an incoming one of at most 128 characters of `[A-Za-z0-9._-]` is echoed, anything else is replaced by \
            a generated id). `traceparent` is kept only when it is a valid W3C trace context. A change that would \
            record an event over 256 KiB (the JSON of its data and metadata) is refused with 413, code \
            `event_too_large`."
    ),
    tags(
        (name = "operations", description = "Health and readiness"),
        (name = "organizations", description = "Tenants (operator)"),
        (name = "api keys", description = "Admin API keys"),
        (name = "workspaces", description = "The workspace tree"),
        (name = "settings", description = "Organization settings"),
        (name = "users", description = "Users, invitations and workspace members")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []), ("basic" = []))
)]
struct ApiDoc;

/// Declares the two ways to present a key: Bearer, or Basic with the key as username.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub(super) async fn serve(api: Arc<utoipa::openapi::OpenApi>) -> Json<utoipa::openapi::OpenApi> {
    Json((*api).clone())
}
