use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = hub::cli::Cli::parse();
    shared::telemetry::init(cli.config.telemetry.log.as_deref());
    hub::cli::run(cli).await
}
