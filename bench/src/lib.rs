//! Benchmarks of the Admin API; run with `cargo bench -p bench` (see `bench/README.md`).
//!
//! What several benchmarks share: running a program bounded in time, and `wrk` with a
//! script that counts answers by status and reports latency percentiles.

pub mod cpu;
pub mod wrk;

/// The statements run in `admin`'s database since the last reset of `pg_stat_statements` (the superuser's
/// own look-ups at `pg_stat_statements` left out), most time first: the text, calls,
/// milliseconds executing and planning, and plans made.
pub async fn statements(admin: &tokio_postgres::Client) -> anyhow::Result<Vec<(String, i64, f64, f64, i64)>> {
    let rows = admin
        .query(
            "SELECT s.query, s.calls, s.total_exec_time, s.total_plan_time, s.plans FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = current_database() AND s.query NOT ILIKE '%pg_stat_statements%' \
             ORDER BY s.total_exec_time + s.total_plan_time DESC, s.query",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))).collect())
}

/// Prints `statements` (from [`statements`]): their calls per `unit` (`units` of them in
/// the phase) and the twelve that took the most time, with their calls per unit and share
/// of the time; `what` names the database and the phase.
pub fn print_statements(statements: &[(String, i64, f64, f64, i64)], units: f64, unit: &str, what: &str) {
    let units = units.max(1.0);
    let total_ms: f64 = statements.iter().map(|s| s.2 + s.3).sum::<f64>().max(f64::MIN_POSITIVE);
    let calls: i64 = statements.iter().map(|s| s.1).sum();
    println!(
        "statements in {what}: {:.2} per {unit}, {total_ms:.0} ms planning and executing ({:.0} µs per {unit})",
        calls as f64 / units,
        1e3 * total_ms / units
    );
    for (query, calls, exec_ms, plan_ms, plans) in statements.iter().take(12) {
        let query: String = query.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(90).collect();
        println!(
            "  {:>7.3}/{unit} {:>5.1}% of time ({:>4.1}% planning, {plans} plans)  {query}",
            *calls as f64 / units,
            100.0 * (exec_ms + plan_ms) / total_ms,
            100.0 * plan_ms / total_ms
        );
    }
}
