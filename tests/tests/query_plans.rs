//! The instance's hot statements reach their few rows through indexes however large the
//! tables grow. Those planned once per connection (a generic plan, kept until the server's
//! statistics of a table change) may be planned while the tables are empty, by a new
//! instance: those plans must still use the indexes once the tables hold many rows, or
//! every call reads a whole table until the next `ANALYZE`. The others are planned at each
//! call, for the tables as they are.

use e2e::PgServer;
use instance::interaction_keys::{LOCK_WORKSPACES, LOOKUP_KEYS};
use instance::webhooks::{recorder, sender};

const ROWS: i64 = 20_000;

/// A statement, the arguments of a call, and the settings it runs under.
type Statement = (&'static str, String, &'static str, &'static str);

/// The statements planned once per connection.
fn planned_once() -> Vec<Statement> {
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

/// The statements planned at each call.
fn planned_each_time() -> Vec<Statement> {
    vec![(
        "record",
        recorder::RECORD.to_owned(),
        "ARRAY['00000000-0000-7000-8000-000000000001'::uuid], ARRAY[1], ARRAY['succeeded'::delivery_status], \
             ARRAY[200], ARRAY[NULL::text], ARRAY[NULL::float8], ARRAY[0], ARRAY[NULL::float8]",
        instance::db::STABLE_PLANS,
    )]
}

/// Prepares `statements` on `client` and runs each once under its settings, which makes
/// its plan.
async fn prepare(client: &tokio_postgres::Client, statements: &[Statement]) {
    for (name, sql, args, plans) in statements {
        client.batch_execute(&format!("PREPARE {name} AS {sql}")).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        client.batch_execute(&format!("BEGIN; {plans}; EXECUTE {name}({args}); ROLLBACK")).await.unwrap();
    }
}

/// The plan `client` runs for the prepared statement `name` under `plans`.
async fn plan(client: &tokio_postgres::Client, plans: &str, name: &str, args: &str) -> Vec<String> {
    client.batch_execute(&format!("BEGIN; {plans}")).await.unwrap();
    let plan: Vec<String> = client
        .query(&format!("EXPLAIN EXECUTE {name}({args})"), &[])
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .iter()
        .map(|row| row.get(0))
        .collect();
    client.batch_execute("ROLLBACK").await.unwrap();
    plan
}

/// Whether `plan` reads a whole table: a sequential scan, a hash or merge join (which
/// read one side whole), or an index scan with no condition on the index, unless a
/// `Limit` right above it stops it at its first rows.
fn reads_a_whole_table(plan: &[String]) -> bool {
    let node = |line: &str| line.trim_start().trim_start_matches("->").trim_start().to_owned();
    plan.iter().enumerate().any(|(i, line)| {
        let this = node(line);
        if ["Seq Scan", "Hash Join", "Merge Join"].iter().any(|whole| this.starts_with(whole)) {
            return true;
        }
        if !(this.starts_with("Index Scan")
            || this.starts_with("Index Only Scan")
            || this.starts_with("Bitmap Index Scan"))
        {
            return false;
        }
        let details = plan[i + 1..].iter().take_while(|l| !l.contains("->"));
        let conditioned = details.clone().any(|l| l.contains("Index Cond:"));
        let limited = i > 0 && node(&plan[i - 1]).starts_with("Limit");
        !conditioned && !limited
    })
}

/// Whether `statements`, as `client` plans them now, read a whole table: the plans that do.
async fn whole_table_reads(client: &tokio_postgres::Client, statements: Vec<Statement>) -> Vec<String> {
    let mut found = Vec::new();
    for (name, _, args, plans) in statements {
        let plan = plan(client, plans, name, args).await;
        if reads_a_whole_table(&plan) {
            found.push(format!("{name} reads a whole table:\n{}", plan.join("\n")));
        }
    }
    found
}

/// Inserts `rows` pending deliveries, due, to ten URLs, each of a new interaction.
async fn pending_deliveries(client: &tokio_postgres::Client, rows: i64) {
    client
        .batch_execute(&format!(
            "WITH i AS (INSERT INTO interactions (id, workspace_id, interaction_key_id, type, payload) \
             SELECT gen_random_uuid(), id, id, 'bench', '{{}}' FROM workspaces ORDER BY id LIMIT {rows} \
             RETURNING id, workspace_id) \
             INSERT INTO deliveries (id, interaction_id, workspace_id, url, status, next_attempt_at) \
             SELECT gen_random_uuid(), id, workspace_id, 'https://hooks.example.test/' || (n % 10), 'pending', \
             now() - interval '1 second' FROM (SELECT id, workspace_id, row_number() OVER () AS n FROM i) i"
        ))
        .await
        .expect("pending deliveries");
}

#[tokio::test]
async fn the_hot_statements_use_their_indexes_once_the_tables_are_full_even_when_planned_on_empty_ones() {
    let db = PgServer::shared().empty_database().await;
    let mut client = db.connect().await;
    instance::migrate::run(&mut client).await.expect("the instance's schema");
    prepare(&client, &planned_once()).await;

    // Then the tables fill: workspaces with their keys, interactions, pending deliveries.
    client
        .batch_execute(&format!(
            "INSERT INTO workspaces (id, stream_version, position, event_hash, state) \
             SELECT gen_random_uuid(), 1, n, '\\x00', '{{\"webhook_uris\": []}}' FROM generate_series(1, {ROWS}) n; \
             INSERT INTO interaction_keys (key_hash, id, workspace_id) \
             SELECT sha256(id::text::bytea), gen_random_uuid(), id FROM workspaces"
        ))
        .await
        .expect("rows");
    pending_deliveries(&client, ROWS).await;
    prepare(&client, &planned_each_time()).await;
    let mut whole_tables =
        whole_table_reads(&client, planned_once().into_iter().chain(planned_each_time()).collect()).await;

    // The statistics say nothing is pending (they were taken when every delivery had
    // ended), then a backlog builds before they are taken again: the statements are
    // planned from statistics that do not know it.
    client
        .batch_execute("DEALLOCATE ALL; UPDATE deliveries SET status = 'succeeded'; ANALYZE")
        .await
        .expect("statistics of a table with nothing pending");
    prepare(&client, &planned_once()).await;
    pending_deliveries(&client, ROWS).await;
    prepare(&client, &planned_each_time()).await;
    whole_tables.extend(
        whole_table_reads(&client, planned_once().into_iter().chain(planned_each_time()).collect())
            .await
            .into_iter()
            .map(|found| format!("with statistics from before the backlog: {found}")),
    );
    assert!(whole_tables.is_empty(), "{}", whole_tables.join("\n"));
}
