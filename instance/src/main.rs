use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use instance::cli::{Cli, Command};
use instance::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = shared::telemetry::init("instance", cli.config.telemetry.log.as_deref());
    let result = async {
        let config = Config::from_args(cli.config)?;
        match cli.command {
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
