use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = hub::cli::Cli::parse();
    let telemetry = shared::telemetry::init("hub", cli.config.telemetry.log.as_deref());
    let code = hub::cli::run(cli).await;
    telemetry.shutdown().await;
    code
}
