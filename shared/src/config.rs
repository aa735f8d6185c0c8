//! Configuration both binaries read (API.md, "Configuration"): the value parsers their
//! clap arguments use (each error says what the variable must be), the one parser of the
//! shared master key, and the groups of settings both take (webhook delivery, telemetry).
//!
//! Secrets are never checked by a clap value parser: clap's error would repeat the value.
//! They arrive as [`SecretString`]s and are checked by the binary's own configuration,
//! whose errors name the variable only.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// The master key shared by the hub and the instances (`HUB_MASTER_KEY`).
pub type MasterKey = Arc<SecretBox<[u8; 32]>>;

#[derive(Debug, thiserror::Error)]
#[error("HUB_MASTER_KEY is invalid: must be 32 bytes, base64-encoded")]
pub struct InvalidMasterKey;

/// Reads `HUB_MASTER_KEY`: 32 bytes, base64 (standard alphabet, padded).
pub fn master_key(text: &SecretString) -> Result<MasterKey, InvalidMasterKey> {
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(text.expose_secret().trim()).map_err(|_| InvalidMasterKey)?;
    let key: [u8; 32] = bytes.try_into().map_err(|_| InvalidMasterKey)?;
    Ok(Arc::new(SecretBox::new(Box::new(key))))
}

/// A count above zero.
pub fn positive_u32(text: &str) -> Result<u32, String> {
    text.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| "must be a positive integer".to_owned())
}

/// A count above zero.
pub fn positive_usize(text: &str) -> Result<usize, String> {
    text.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| "must be a positive integer".to_owned())
}

/// A size or count above zero, as the stream's limits take it.
pub fn positive_i64(text: &str) -> Result<i64, String> {
    text.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| "must be a positive integer".to_owned())
}

/// A whole number of seconds above zero.
pub fn positive_seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| "must be a positive whole number of seconds".to_owned())
}

/// A whole number of seconds, where 0 turns the limit off.
pub fn seconds_or_off(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse()
        .map(Duration::from_secs)
        .map_err(|_| "must be a whole number of seconds (0 turns it off)".to_owned())
}

/// When a failed webhook delivery is tried again: one retry per entry after the first
/// attempt, each entry the wait before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

/// `WEBHOOK_RETRY_SCHEDULE`'s default.
pub const DEFAULT_RETRY_SCHEDULE: &str = "5,300,1800,7200,18000,36000";

/// Seconds, comma-separated, each above zero.
pub fn retry_schedule(text: &str) -> Result<RetrySchedule, String> {
    text.split(',')
        .map(|entry| positive_seconds(entry).ok())
        .collect::<Option<Vec<_>>>()
        .map(RetrySchedule)
        .ok_or_else(|| "must be positive whole numbers of seconds, comma-separated (e.g. 5,300,1800)".to_owned())
}

/// How instances deliver webhooks (the embedded instance of a single-node hub too).
#[derive(Debug, Clone, clap::Args)]
pub struct Webhooks {
    /// Seconds to wait before each retry of a failed webhook delivery, comma-separated:
    /// one retry per entry after the first attempt, then the delivery is failed.
    #[arg(
        long = "webhook-retry-schedule",
        env = "WEBHOOK_RETRY_SCHEDULE",
        value_name = "WEBHOOK_RETRY_SCHEDULE",
        default_value = DEFAULT_RETRY_SCHEDULE,
        value_parser = retry_schedule,
        global = true
    )]
    pub retry_schedule: RetrySchedule,
    /// Deliver webhooks to loopback, private and link-local addresses too (refused by
    /// default: failed at once, no retry).
    #[arg(
        long = "webhook-allow-private",
        env = "WEBHOOK_ALLOW_PRIVATE",
        value_name = "WEBHOOK_ALLOW_PRIVATE",
        default_value = "false",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        global = true
    )]
    pub allow_private: bool,
}

/// Logging and trace export.
#[derive(Debug, Clone, clap::Args)]
pub struct Telemetry {
    /// Log filter (`tracing` EnvFilter directives, e.g. `info,hub=debug`); default `info`.
    #[arg(long = "log", env = "RUST_LOG", value_name = "RUST_LOG", global = true)]
    pub log: Option<String>,
    /// OTLP endpoint traces are exported to; nothing is exported while it is unset.
    #[arg(
        long = "otel-exporter-otlp-endpoint",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "OTEL_EXPORTER_OTLP_ENDPOINT",
        // An endpoint URL may carry credentials (`https://user:token@collector`).
        hide_env_values = true,
        global = true
    )]
    pub otlp_endpoint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_key_is_32_bytes_of_base64_and_its_error_shows_no_value() {
        let key = SecretString::from("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
        assert_eq!(master_key(&key).unwrap().expose_secret(), b"0123456789abcdef0123456789abcdef");
        for bad in ["c2hvcnQ=", "not base64 at all", ""] {
            let error = master_key(&SecretString::from(bad)).unwrap_err().to_string();
            assert!(error.contains("HUB_MASTER_KEY") && (bad.is_empty() || !error.contains(bad)), "{error}");
        }
    }

    #[test]
    fn numbers_and_schedules_refuse_nonsense() {
        assert_eq!(positive_u32(" 7 "), Ok(7));
        assert!(positive_u32("0").is_err() && positive_u32("many").is_err() && positive_u32("").is_err());
        assert_eq!(seconds_or_off("0"), Ok(Duration::ZERO));
        assert!(positive_seconds("0").is_err());
        assert_eq!(retry_schedule("5, 60").unwrap().0, [Duration::from_secs(5), Duration::from_secs(60)]);
        assert_eq!(retry_schedule(DEFAULT_RETRY_SCHEDULE).unwrap().0.len(), 6);
        assert!(retry_schedule("5,,60").is_err() && retry_schedule("5,0").is_err());
    }
}
