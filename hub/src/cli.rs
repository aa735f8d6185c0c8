//! The `hub` command line (API.md, "CLI").

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::startup::{Application, Mode};

#[derive(Debug, Parser)]
#[command(name = "hub", version, about = "Admin API hub: HTTP API, event store and relay")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Admin API.
    Serve {
        /// Run an embedded instance in this process (needs only PostgreSQL).
        #[arg(long)]
        single_node: bool,
    },
    /// Apply pending database migrations and exit.
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
    Verify,
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
    let config = Config::from_env()?;
    match cli.command {
        Command::Serve { single_node } => {
            let mode = if single_node { Mode::SingleNode } else { Mode::MultiInstance };
            Application::build(config, mode).await?.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let mut client = crate::db::connect(&config.database_config()?).await?;
            crate::migrate::run(&mut client).await?;
            eprintln!("migrations applied (schema version {})", crate::migrate::latest_version());
            Ok(ExitCode::SUCCESS)
        }
        Command::Projections { command: ProjectionsCommand::Rebuild } => {
            let mut client =
                crate::db::connect(&config.database_config()?).await.context("connecting to the database")?;
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
                EventsCommand::Verify => match crate::audit::verify(&client).await? {
                    Ok(verified) => {
                        println!(
                            "ok: {} events, hash chain intact, head {}",
                            verified.events,
                            hex::encode(verified.head_hash)
                        );
                        Ok(ExitCode::SUCCESS)
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
