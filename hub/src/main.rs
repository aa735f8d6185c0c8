use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    shared::telemetry::init();
    hub::cli::run(hub::cli::Cli::parse()).await
}
