use std::process::ExitCode;

use clap::Parser;
use instance::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    shared::telemetry::init();
    let result = match Cli::parse().command {
        Command::Serve => instance::startup::serve().await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
