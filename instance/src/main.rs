use std::process::ExitCode;

use clap::Parser;
use instance::cli::{Cli, Command};
use instance::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let telemetry = shared::telemetry::init("instance");
    let command = Cli::parse().command;
    let result = async {
        let config = Config::from_env()?;
        match command {
            Command::Serve => instance::startup::serve(config).await,
            Command::Rebuild => {
                let applied = instance::startup::rebuild(config).await?;
                println!("rebuilt from {applied} events");
                Ok(())
            }
            Command::Digest => {
                let client = config.connect().await?;
                println!("{}", instance::apply::digest(&client).await?);
                Ok(())
            }
        }
    }
    .await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
