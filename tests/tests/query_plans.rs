//! The instance's hot statements run under plans made once per connection (a generic plan,
//! kept until the server's statistics of a table change). A connection opened when the
//! tables were empty makes its plans then: those plans must still reach the rows through
//! the indexes once the tables hold many rows, or every call reads the whole table until
//! the next `ANALYZE`.

use e2e::PgServer;
use instance::interaction_keys::{LOCK_WORKSPACES, LOOKUP_KEYS};
use instance::webhooks::sender;

const ROWS: i64 = 20_000;

/// The statements, each with the arguments of a call, and the settings they run under.
fn statements() -> Vec<(&'static str, String, &'static str, &'static str)> {
    vec![
        ("due", sender::DUE.to_owned(), "'{}'::text[], 64, 8, '{}'::uuid[]", sender::CLAIM_PLANS),
        (
            "claim",
            sender::claim_statement(),
            "ARRAY['00000000-0000-7000-8000-000000000001'::uuid], 30",
            sender::CLAIM_PLANS,
        ),
        ("lock", LOCK_WORKSPACES.to_owned(), "ARRAY['\\x01'::bytea]", instance::ingest_batch::PLANS),
        ("lookup", LOOKUP_KEYS.to_owned(), "ARRAY['\\x01'::bytea]", instance::ingest_batch::PLANS),
    ]
}

/// The plan `client` runs for the prepared statement `name` under `plans`.
async fn plan(client: &tokio_postgres::Client, plans: &str, name: &str, args: &str) -> String {
    client.batch_execute(&format!("BEGIN; {plans}")).await.unwrap();
    let plan: Vec<String> = client
        .query(&format!("EXPLAIN EXECUTE {name}({args})"), &[])
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .iter()
        .map(|row| row.get(0))
        .collect();
    client.batch_execute("ROLLBACK").await.unwrap();
    plan.join("\n")
}

#[tokio::test]
async fn plans_made_while_the_tables_are_empty_still_use_the_indexes_once_the_tables_are_full() {
    let db = PgServer::shared().empty_database().await;
    let mut client = db.connect().await;
    instance::migrate::run(&mut client).await.expect("the instance's schema");

    // Each statement prepared and run once on the empty tables: its plan is made now.
    for (name, sql, args, plans) in statements() {
        client.batch_execute(&format!("PREPARE {name} AS {sql}")).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        client.batch_execute(&format!("BEGIN; {plans}; EXECUTE {name}({args}); ROLLBACK")).await.unwrap();
    }

    // Then the tables fill: workspaces with their keys, interactions, pending deliveries.
    client
        .batch_execute(&format!(
            "INSERT INTO workspaces (id, stream_version, position, event_hash, state) \
             SELECT gen_random_uuid(), 1, n, '\\x00', '{{\"webhook_uris\": []}}' FROM generate_series(1, {ROWS}) n; \
             INSERT INTO interaction_keys (key_hash, id, workspace_id) \
             SELECT sha256(id::text::bytea), gen_random_uuid(), id FROM workspaces; \
             INSERT INTO interactions (id, workspace_id, interaction_key_id, type, payload) \
             SELECT gen_random_uuid(), id, id, 'bench', '{{}}' FROM workspaces; \
             INSERT INTO deliveries (id, interaction_id, workspace_id, url, status, next_attempt_at) \
             SELECT gen_random_uuid(), id, workspace_id, 'https://hooks.example.test/' || (n % 10), 'pending', \
             now() - interval '1 second' FROM (SELECT id, workspace_id, row_number() OVER () AS n FROM interactions) i"
        ))
        .await
        .expect("rows");

    let mut whole_tables = Vec::new();
    for (name, _, args, plans) in statements() {
        let plan = plan(&client, plans, name, args).await;
        if ["Seq Scan", "Hash Join", "Merge Join"].iter().any(|whole_table| plan.contains(whole_table)) {
            whole_tables.push(format!("{name} reads a whole table:\n{plan}"));
        }
    }
    assert!(whole_tables.is_empty(), "{}", whole_tables.join("\n"));
}
