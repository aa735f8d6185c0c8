use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let telemetry = shared::telemetry::init("hub");
    let code = hub::cli::run(hub::cli::Cli::parse()).await;
    telemetry.shutdown().await;
    code
}
