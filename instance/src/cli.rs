//! The `instance` command line (API.md, "CLI").

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "instance",
    version,
    next_line_help = true,
    about = "Worker instance: materializes workspace state and serves the data plane"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume this instance's events and serve on INSTANCE_LISTEN_ADDR (default 127.0.0.1:8081).
    Serve,
    /// Drop the materialized state and replay this instance's workspaces from the hub.
    Rebuild,
    /// Print a digest of the materialized state (equal digests: equal states).
    Digest,
}
