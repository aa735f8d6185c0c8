//! Migration V13 (statuses, roles and kinds as enum types) on a database that already
//! holds rows of every value, and the triggers and indexes it creates again.

use std::path::PathBuf;

const SEED: &str = "
    SET hub.replaying_history = 'on';
    INSERT INTO organizations (id, name, email, plan, status, version, created_at, updated_at) VALUES
        ('00000000-0000-0000-0000-0000000000a1', 'live', 'a@example.test', 'free', 'active', 1, now(), now()),
        ('00000000-0000-0000-0000-0000000000a2', 'gone', 'b@example.test', 'free', 'deleted', 2, now(), now());
    INSERT INTO workspaces (id, organization_id, name, status, settings, webhook_uris, public_keys, ancestors,
                            version, created_at, updated_at)
    SELECT w.id, '00000000-0000-0000-0000-0000000000a1', w.name, w.status, '{}', '[]', '[]', ARRAY[w.id], 1, now(), now()
      FROM (VALUES ('00000000-0000-0000-0000-0000000000b1'::uuid, 'one', 'active'),
                   ('00000000-0000-0000-0000-0000000000b2'::uuid, 'two', 'archived'),
                   ('00000000-0000-0000-0000-0000000000b3'::uuid, 'three', 'deleted')) w(id, name, status);
    INSERT INTO users (id, organization_id, email, name, status, version, created_at, updated_at)
    SELECT u.id, '00000000-0000-0000-0000-0000000000a1', u.email, 'U', u.status, 1, now(), now()
      FROM (VALUES ('00000000-0000-0000-0000-0000000000c1'::uuid, 'c1@example.test', 'active'),
                   ('00000000-0000-0000-0000-0000000000c2'::uuid, 'c2@example.test', 'disabled'),
                   ('00000000-0000-0000-0000-0000000000c3'::uuid, 'c3@example.test', 'deleted')) u(id, email, status);
    INSERT INTO invitations (id, workspace_id, email, role, status, token_hash, expires_at, created_at, updated_at)
    SELECT gen_random_uuid(), '00000000-0000-0000-0000-0000000000b1', 'i@example.test', i.role, i.status,
           decode(md5(i.role || i.status), 'hex'), now() + interval '1 day', now(), now()
      FROM (VALUES ('owner', 'pending'), ('admin', 'accepted'), ('member', 'declined'), ('viewer', 'revoked'))
           i(role, status);
    INSERT INTO members (workspace_id, user_id, role, joined_at)
    SELECT '00000000-0000-0000-0000-0000000000b1', gen_random_uuid(), r, now()
      FROM unnest(ARRAY['owner', 'admin', 'member', 'viewer']) r;
    INSERT INTO api_keys (id, organization_id, name, scopes, workspace_ids, allowed_ips, created_by_type,
                          key_hash, partial_key_hint, version, created_at, updated_at)
    SELECT gen_random_uuid(), '00000000-0000-0000-0000-0000000000a1', t, '{}', '{}', '{}', t,
           decode(md5(t), 'hex'), 'hint', 1, now(), now()
      FROM unnest(ARRAY['operator', 'api_key', 'user', 'app', 'system']) t;
    INSERT INTO outbox (kind, recipient, subject, status)
    SELECT 'invitation', 'r@example.test', 's', s
      FROM unnest(ARRAY['pending', 'sending', 'sent', 'failed', 'unknown']) s;
    RESET hub.replaying_history;
";

/// Every (table, column) V13 converts, with the values seeded above, as text.
const COLUMNS: [(&str, &str, &str); 9] = [
    ("organizations", "status", "organization_status"),
    ("workspaces", "status", "workspace_status"),
    ("users", "status", "user_status"),
    ("invitations", "status", "invitation_status"),
    ("invitations", "role", "member_role"),
    ("members", "role", "member_role"),
    ("api_keys", "created_by_type", "actor_type"),
    ("outbox", "status", "outbox_status"),
    ("outbox", "kind", "email_kind"),
];

fn migration(version: u32) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../migrations/hub");
    let file = std::fs::read_dir(&dir)
        .expect("the hub's migrations")
        .map(|entry| entry.expect("a migration file").path())
        .find(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("V{version}__")))
        });
    std::fs::read_to_string(file.unwrap_or_else(|| panic!("migration V{version} exists"))).expect("readable")
}

async fn values(client: &tokio_postgres::Client) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for (table, column, _) in COLUMNS {
        let rows = client
            .query(&format!("SELECT {column}::text AS value FROM {table} ORDER BY 1"), &[])
            .await
            .unwrap_or_else(|e| panic!("reading {table}.{column}: {e}"));
        all.push(rows.iter().map(|row| row.get("value")).collect());
    }
    all
}

#[tokio::test]
async fn the_enum_migration_keeps_every_row_and_the_rules_that_read_the_converted_columns() {
    let db = e2e::PgServer::shared().empty_database().await;
    let client = db.connect().await;
    for version in (1..=12).filter(|v| *v != 11) {
        client.batch_execute(&migration(version)).await.unwrap_or_else(|e| panic!("V{version}: {e}"));
    }
    client.batch_execute(SEED).await.expect("rows of every value");
    let before = values(&client).await;
    let usage = "SELECT used_workspaces, used_pending_invitations FROM organizations WHERE name = 'live'";
    let used_before: (i32, i32) = client
        .query_one(usage, &[])
        .await
        .map(|r| (r.get("used_workspaces"), r.get("used_pending_invitations")))
        .unwrap();

    client.batch_execute(&migration(13)).await.expect("V13 applies to a populated database");

    assert_eq!(values(&client).await, before, "every value survives the change of type");
    for (table, column, ty) in COLUMNS {
        let actual: String = client
            .query_one(
                "SELECT atttypid::regtype::text AS ty FROM pg_attribute \
                 WHERE attrelid = $1::text::regclass AND attname = $2",
                &[&table, &column],
            )
            .await
            .unwrap()
            .get("ty");
        assert_eq!(actual, ty, "{table}.{column}");
    }
    // The counters' triggers, created again, still count.
    assert_eq!(
        client
            .query_one(usage, &[])
            .await
            .map(|r| (r.get("used_workspaces"), r.get("used_pending_invitations")))
            .unwrap(),
        used_before
    );
    client.batch_execute("UPDATE workspaces SET status = 'deleted' WHERE name = 'two'").await.unwrap();
    client.batch_execute("UPDATE invitations SET status = 'revoked' WHERE status = 'pending'").await.unwrap();
    let used_after: (i32, i32) = client
        .query_one(usage, &[])
        .await
        .map(|r| (r.get("used_workspaces"), r.get("used_pending_invitations")))
        .unwrap();
    assert_eq!(used_after, (used_before.0 - 1, used_before.1 - 1));
    // The tree rule, created again, still refuses an active child under an archived parent.
    client.batch_execute("UPDATE workspaces SET status = 'archived' WHERE name = 'one'").await.unwrap();
    let refused = client
        .batch_execute(
            "INSERT INTO workspaces (id, organization_id, parent_id, name, status, settings, webhook_uris, \
             public_keys, ancestors, version, created_at, updated_at) VALUES (gen_random_uuid(), \
             '00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000b1', 'child', 'active', \
             '{}', '[]', '[]', '{}', 1, now(), now())",
        )
        .await
        .expect_err("an active child under an archived parent");
    let constraint = refused.as_db_error().and_then(|e| e.constraint()).map(str::to_owned);
    assert_eq!(constraint.as_deref(), Some("workspaces_parent_active"));
    // The sibling-name index, created again, still refuses a live duplicate.
    let duplicate = client
        .batch_execute(
            "INSERT INTO workspaces (id, organization_id, name, status, settings, webhook_uris, public_keys, \
             ancestors, version, created_at, updated_at) VALUES (gen_random_uuid(), \
             '00000000-0000-0000-0000-0000000000a1', 'ONE', 'active', '{}', '[]', '[]', '{}', 1, now(), now())",
        )
        .await
        .expect_err("a live sibling of the same name");
    assert_eq!(duplicate.as_db_error().and_then(|e| e.constraint()), Some("workspaces_sibling_name"));
    // A value outside the type is refused by the column itself.
    let bad = client.batch_execute("UPDATE users SET status = 'asleep'").await.expect_err("not a user status");
    assert_eq!(bad.code(), Some(&tokio_postgres::error::SqlState::INVALID_TEXT_REPRESENTATION));
}
