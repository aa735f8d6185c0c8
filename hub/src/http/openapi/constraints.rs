//! The constraints the server enforces, declared in the document so that every request
//! valid by the schema passes validation (and most that are not, fail it). Each value
//! comes from the validator's own constant or pattern.

use serde_json::{Value, json};
use shared::access_token;
use shared::domain::values::{
    self, CONTROL, EMAIL_PATTERN, MAX_NAME_CHARS, MAX_WEBHOOK_URI_BYTES, TOKEN_PATTERN, WEBHOOK_URI_PATTERN,
};
use shared::domain::{api_key, organization, workspace};
use shared::feed::MAX_LIMIT;
use shared::keys::{self, KeyKind};

use crate::http::invitations;
use crate::http::pagination::{MAX_PAGE, MAX_PAGE_SIZE};

pub(super) fn declare(doc: &mut Value) {
    parameters(doc);
    bodies(doc);
}

/// A query text filter: bounded in characters, no control characters.
fn text_filter(max: usize) -> Value {
    json!({"maxLength": max, "pattern": format!("^[^{CONTROL}]*$")})
}

/// Query parameters, by name: the same name means the same rule on every operation.
fn parameters(doc: &mut Value) {
    for operation in super::operations_mut(doc) {
        let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) else { continue };
        for parameter in parameters {
            if parameter["in"] != "query" {
                continue;
            }
            let rule = match parameter["name"].as_str().unwrap_or_default() {
                "page" => json!({"minimum": 1, "maximum": MAX_PAGE}),
                "page_size" => json!({"minimum": 1, "maximum": MAX_PAGE_SIZE}),
                "limit" => json!({"minimum": 1, "maximum": MAX_LIMIT}),
                "after" => json!({"minimum": 0}),
                "name" | "stream_id" => text_filter(200),
                "email" => text_filter(254),
                "instance_id" => text_filter(100),
                // Any u32 (more levels than a tree has are harmless).
                "depth" => json!({"minimum": 0, "maximum": u32::MAX, "format": "int64"}),
                _ => continue,
            };
            merge(&mut parameter["schema"], rule);
        }
    }
    let heartbeat = format!("/paths/{}/post/parameters/0/schema", super::escape("/v1/instances/{id}/heartbeat"));
    if let Some(schema) = doc.pointer_mut(&heartbeat) {
        merge(schema, instance_id());
    }
}

/// Request body fields, by component and property.
fn bodies(doc: &mut Value) {
    let name = |max: usize| json!({"pattern": values::name_pattern(max), "minLength": 1});
    let email = json!({"pattern": EMAIL_PATTERN});
    let token = json!({"pattern": TOKEN_PATTERN});
    let settings = json!({"type": ["object", "null"]});
    let webhook_uris = json!({
        "maxItems": workspace::MAX_WEBHOOK_URIS,
        "items": {"pattern": WEBHOOK_URI_PATTERN, "maxLength": MAX_WEBHOOK_URI_BYTES}
    });
    let public_keys = json!({"maxItems": workspace::MAX_PUBLIC_KEYS});
    let rules: Vec<(&str, &str, Value)> = vec![
        ("CreateOrganization", "name", name(MAX_NAME_CHARS)),
        ("CreateOrganization", "email", email.clone()),
        ("CreateOrganization", "plan", token.clone()),
        ("UpdateOrganization", "name", name(MAX_NAME_CHARS)),
        ("UpdateOrganization", "email", email.clone()),
        ("UpdateOrganization", "plan", token),
        ("CreateApp", "name", name(MAX_NAME_CHARS)),
        ("CreateApp", "contact_email", email.clone()),
        ("CreateApiKey", "name", name(MAX_NAME_CHARS)),
        ("CreateApiKey", "workspace_ids", json!({"maxItems": api_key::MAX_LIST_ENTRIES})),
        ("CreateApiKey", "allowed_ips", json!({"maxItems": api_key::MAX_LIST_ENTRIES})),
        ("CreateApiKey", "scopes", json!({"minItems": 1})),
        ("DataKeysRequest", "workspace_ids", json!({"minItems": 1, "maxItems": shared::link::MAX_DATA_KEYS})),
        ("UpdateApiKey", "name", name(MAX_NAME_CHARS)),
        ("UpdateApiKey", "scopes", json!({"minItems": 1})),
        ("RotateApiKey", "grace_period_seconds", json!({"minimum": 0, "maximum": api_key::MAX_GRACE_PERIOD_SECONDS})),
        ("UpdateUser", "name", name(MAX_NAME_CHARS)),
        ("CreateInvitation", "email", email),
        ("InvitationToken", "name", name(MAX_NAME_CHARS)),
        ("RotateSecret", "grace_period_seconds", json!({"minimum": 0, "maximum": workspace::MAX_SECRET_GRACE_SECONDS})),
        ("CreateWorkspace", "name", name(workspace::MAX_NAME_LENGTH)),
        ("CreateWorkspace", "instance_id", instance_id()),
        (
            "AccessTokenRequest",
            "expires_in_seconds",
            json!({"minimum": 1, "maximum": access_token::MAX_LIFETIME_SECONDS}),
        ),
        ("CreateInvitation", "expires_in_seconds", json!({"minimum": 1, "maximum": invitations::MAX_TTL_SECONDS})),
        ("InvitationToken", "token", json!({"pattern": keys::pattern(KeyKind::InvitationToken)})),
        ("CreateWorkspace", "settings", settings.clone()),
        ("CreateWorkspace", "webhook_uris", webhook_uris.clone()),
        ("CreateWorkspace", "public_keys", public_keys.clone()),
        ("UpdateWorkspace", "name", name(workspace::MAX_NAME_LENGTH)),
        ("UpdateWorkspace", "settings", settings),
        ("UpdateWorkspace", "webhook_uris", webhook_uris),
        ("UpdateWorkspace", "public_keys", public_keys),
        ("CreateInteractionKey", "name", name(workspace::MAX_NAME_LENGTH)),
        ("PublicKey", "id", name(100)),
        ("PublicKey", "key", json!({"pattern": workspace::PUBLIC_KEY_PATTERN})),
        (
            "UpdateSettings",
            "rate_limit_per_minute",
            json!({"minimum": 1, "maximum": organization::MAX_RATE_LIMIT_PER_MINUTE}),
        ),
        (
            "UpdateSettings",
            "max_key_lifetime_days",
            json!({"minimum": 1, "maximum": organization::MAX_KEY_LIFETIME_DAYS}),
        ),
    ];
    let rules = rules.into_iter().chain(crate::http::external_keys::constraints());
    for (component, property, rule) in rules {
        if let Some(schema) = doc.pointer_mut(&format!("/components/schemas/{component}/properties/{property}")) {
            merge(schema, rule);
        }
    }
}

/// An instance's id: a token other than the one reserved for the hub's own events.
fn instance_id() -> Value {
    json!({"pattern": TOKEN_PATTERN, "not": {"const": shared::relayed::HUB_SEGMENT}})
}

/// Adds `rule`'s keywords to `schema` (an object); `items` rules merge into the items'
/// schema.
fn merge(schema: &mut Value, rule: Value) {
    let (Some(target), Value::Object(rule)) = (schema.as_object_mut(), rule) else { return };
    for (keyword, value) in rule {
        match target.get_mut(&keyword) {
            Some(existing) if keyword == "items" && existing.is_object() => merge(existing, value),
            _ => {
                target.insert(keyword, value);
            }
        }
    }
}
