//! Appends events through the hub's event store from a process of its own.
//!
//! `append_load <database-url> <tasks> <appends-per-task> <streams>`: used by the
//! cross-process test and the benchmark to run several independent writers (each process
//! has its own group-commit writer, as each hub process does) against one database.
//! Prints the number of events appended.

use std::process::ExitCode;

use hub::store::{EventStore, ExpectedVersion, NewEvent, WriterConfig};
use shared::Metadata;
use shared::events::organization::{OrganizationEvent, OrganizationUpdated};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (|| -> Option<(String, usize, usize, usize)> {
        Some((args.get(1)?.clone(), args.get(2)?.parse().ok()?, args.get(3)?.parse().ok()?, args.get(4)?.parse().ok()?))
    })();
    let Some((url, tasks, per_task, streams)) = parsed else {
        eprintln!("usage: append_load <database-url> <tasks> <appends-per-task> <streams>");
        return ExitCode::from(2);
    };
    let config: tokio_postgres::Config = match url.parse() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("bad database url: {error}");
            return ExitCode::from(2);
        }
    };
    let store = EventStore::start(hub::db::pool(config, 4), WriterConfig::default());
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = store.clone();
        let prefix = prefix.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let stream = format!("org-{prefix}-{}", (task * per_task + i) % streams.max(1));
                let event = OrganizationEvent::OrganizationUpdated(OrganizationUpdated {
                    name: Some(format!("task {task} append {i}")),
                    email: None,
                    plan: None,
                });
                let new = NewEvent::new(&event, &Metadata::system()).expect("events serialize");
                store.append(stream, ExpectedVersion::Any, vec![new]).await?;
            }
            Ok::<_, hub::store::AppendError>(())
        }));
    }
    let mut appended = 0;
    for handle in handles {
        match handle.await {
            Ok(Ok(())) => appended += per_task,
            Ok(Err(error)) => {
                eprintln!("append failed: {error}");
                return ExitCode::FAILURE;
            }
            Err(error) => {
                eprintln!("task failed: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{appended}");
    ExitCode::SUCCESS
}
