//! The `hub` command line (API.md, "CLI").

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::startup::{Application, Mode};

#[derive(Debug, Parser)]
#[command(name = "hub", version, next_line_help = true, about = "Admin API hub: HTTP API, event store and relay")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Admin API.
    ///
    /// Migrates first when DATABASE_URL's role owns the schema; a least-privileged role
    /// never migrates: the hub refuses to start until `hub migrate` has run.
    Serve {
        /// Run an embedded instance in this process (needs only PostgreSQL).
        #[arg(long)]
        single_node: bool,
    },
    /// Apply pending database migrations, as the owning role, and exit.
    ///
    /// Connects with HUB_MIGRATION_DATABASE_URL (else DATABASE_URL). When that is another
    /// user than DATABASE_URL's, DATABASE_URL's user becomes the serving role: it is granted
    /// SELECT and INSERT on the event log and read/write on the other tables, never
    /// ownership, so `hub serve` running as it cannot rewrite the log or drop its triggers.
    Migrate,
    /// Operator tools over the event log.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Operator tools over the read models.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Drop the hub's read models and rebuild them by replaying the whole log.
    Rebuild,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Write the event log to stdout.
    Export {
        /// Only events after this position.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
    /// Check the hash chain; exit 1 naming the first bad position.
    ///
    /// With --witness, also compare the log with what instances applied: each instance
    /// keeps the hash of the last event it applied per workspace, so a log rewritten after
    /// that (even with a recomputed chain) exits 1 naming the workspace and position.
    Verify {
        /// An instance's database URL (for a single-node hub: the hub's own database,
        /// whose schema `instance` holds the embedded instance). Repeatable.
        #[arg(long = "witness", value_name = "DATABASE_URL")]
        witnesses: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
}

/// Exit code when `events verify` finds the chain broken.
const CHAIN_BROKEN: u8 = 1;
/// Exit code when a command could not run (bad configuration, database down).
const FAILED: u8 = 2;

pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(FAILED)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::from_args(cli.config)?;
    match cli.command {
        Command::Serve { single_node } => {
            let mode = if single_node { Mode::SingleNode } else { Mode::MultiInstance };
            Application::build(config, mode).await?.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let serving_role = config.serving_role()?;
            crate::migrate::prepare(&config.migration_database_config()?, serving_role.as_deref()).await?;
            eprintln!("migrations applied (schema version {})", crate::migrate::latest_version());
            match serving_role {
                Some(role) => eprintln!("serving role {role} granted its rights"),
                None => eprintln!("no separate serving role (set HUB_MIGRATION_DATABASE_URL to the owner's URL)"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Projections { command: ProjectionsCommand::Rebuild } => {
            let mut client =
                crate::db::connect(&config.migration_database_config()?).await.context("connecting to the database")?;
            let events = crate::projections::rebuild::rebuild(&mut client).await?;
            println!("read models rebuilt from {events} events");
            Ok(ExitCode::SUCCESS)
        }
        Command::Events { command } => {
            let client = crate::db::connect(&config.database_config()?).await.context("connecting to the database")?;
            match command {
                EventsCommand::Export { after, format: ExportFormat::Jsonl } => {
                    let stdout = std::io::stdout();
                    let mut out = std::io::BufWriter::new(stdout.lock());
                    let count = crate::audit::export_jsonl(&client, after, &mut out).await?;
                    eprintln!("exported {count} events");
                    Ok(ExitCode::SUCCESS)
                }
                EventsCommand::Verify { witnesses } => match crate::audit::verify(&client).await? {
                    Ok(verified) => {
                        println!(
                            "ok: {} events, hash chain intact, head {}",
                            verified.events,
                            hex::encode(verified.head_hash)
                        );
                        verify_witnesses(&client, &witnesses).await
                    }
                    Err(broken) => {
                        println!("hash chain broken at position {}: {}", broken.position, broken.reason);
                        Ok(ExitCode::from(CHAIN_BROKEN))
                    }
                },
            }
        }
    }
}

/// Compares the log with each witness; exit 1 at the first that contradicts it.
async fn verify_witnesses(log: &tokio_postgres::Client, witnesses: &[String]) -> anyhow::Result<ExitCode> {
    for (index, url) in witnesses.iter().enumerate() {
        let config: tokio_postgres::Config =
            url.parse().map_err(|_| anyhow::anyhow!("witness {} is not a PostgreSQL connection string", index + 1))?;
        // Named by database, never by its URL: that may carry a password.
        let name = format!("witness {} ({})", index + 1, config.get_dbname().unwrap_or("?"));
        let witness = crate::db::connect(&config).await.with_context(|| format!("connecting to {name}"))?;
        match crate::witness::check(log, &witness).await.with_context(|| format!("reading {name}"))? {
            Ok(count) => println!("ok: {name} agrees with the log on {count} workspace(s)"),
            Err(found) => {
                println!(
                    "log rewritten: {name} applied workspace {} at position {}: {}",
                    found.workspace, found.position, found.reason
                );
                return Ok(ExitCode::from(CHAIN_BROKEN));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
