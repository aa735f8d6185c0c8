//! The rule that keeps a deleted partner app out of every live interaction key, whichever
//! of the app's deletion and a key's creation commits first: the commit that would leave a
//! live key naming a revoked app is refused (the deletion is then planned again).

use e2e::{Api, HubProcess, OPERATOR_KEY, TestDatabase};
use serde_json::json;

fn id(body: &serde_json::Value) -> uuid::Uuid {
    body["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn no_commit_leaves_a_live_interaction_key_naming_a_deleted_app() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org =
        operator.post("/v1/organizations", json!({"name": "Acme", "email": "ops@acme.test", "plan": "pro"})).await;
    let org = id(&org.expect(201).body);
    let admin = operator.post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org})).await;
    let admin = operator.with_key(admin.expect(201).body["secret"].as_str().unwrap());
    let workspace = id(&admin.post("/v1/workspaces", json!({"name": "Sales"})).await.expect(201).body);
    let app = |name: &str| {
        operator.post("/v1/apps", json!({"name": name, "kind": "destination", "contact_email": "dev@partner.test"}))
    };
    let kept = id(&app("Kept").await.expect(201).body);
    let deleted = id(&app("Deleted").await.expect(201).body);
    let keys = format!("/v1/workspaces/{workspace}/interaction-keys");
    admin.post(&keys, json!({"name": "to kept", "destination": {"type": "app", "app_id": kept}})).await.expect(201);
    let client = db.connect().await;

    // A deletion that does not revoke a live key of the app (one created after it planned).
    let refused = client.execute("UPDATE apps SET revoked_at = now() WHERE id = $1", &[&kept]).await.unwrap_err();
    let constraint = refused.as_db_error().and_then(|e| e.constraint());
    assert_eq!(constraint, Some("apps_keys_revoked"), "{refused:?}");
    // Through the API the deletion revokes the key in the same commit.
    operator.delete(&format!("/v1/apps/{kept}")).await.expect(204);
    let live: i64 = client
        .query_one(
            "SELECT count(*) FROM interaction_keys WHERE destination_app_id = $1 AND revoked_at IS NULL",
            &[&kept],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0);

    // A create that found the app live before the app's deletion committed.
    operator.delete(&format!("/v1/apps/{deleted}")).await.expect(204);
    let refused = client
        .execute(
            "INSERT INTO interaction_keys (id, workspace_id, organization_id, name, destination, destination_app_id, \
             key_hash, partial_key_hint, created_at, updated_at) \
             VALUES (gen_random_uuid(), $1, $2, 'late', jsonb_build_object('type', 'app', 'app_id', $3::uuid), $3, \
             '\\x00', 'ik_...', now(), now())",
            &[&workspace, &org, &deleted],
        )
        .await
        .unwrap_err();
    let constraint = refused.as_db_error().and_then(|e| e.constraint());
    assert_eq!(constraint, Some("interaction_keys_apps_live"), "{refused:?}");
    // And the API refuses such a key with a problem, not a server error.
    let reply = admin.post(&keys, json!({"name": "late", "destination": {"type": "app", "app_id": deleted}})).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
}
