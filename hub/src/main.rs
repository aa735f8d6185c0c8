use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = hub::cli::Cli::parse();
    shared::telemetry::init(cli.config.telemetry.log.as_deref());
    hub::cli::run(cli).await
}
