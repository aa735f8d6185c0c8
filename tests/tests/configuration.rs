//! Configuration of the real binaries (API.md, "Configuration"): `--help` lists every
//! variable of the contract without showing a secret's value, and an invalid value stops
//! the process with exit code 2 and an error naming the variable, never a panic.

use std::process::{Command, Output};

use e2e::binaries::binary;

/// Variables of the contract each binary reads.
const HUB_VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "NATS_URL",
    "HUB_LISTEN_ADDR",
    "HUB_OPERATOR_KEY",
    "HUB_MASTER_KEY",
    "HUB_PUBLIC_URL",
    "SMTP_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "RUST_LOG",
    "HUB_AUTH_FAILURES_PER_MINUTE",
    "HUB_RATE_LIMIT_PER_MINUTE",
    "WEBHOOK_RETRY_SCHEDULE",
    "WEBHOOK_ALLOW_PRIVATE",
];
const INSTANCE_VARIABLES: &[&str] = &[
    "INSTANCE_DATABASE_URL",
    "NATS_URL",
    "INSTANCE_LISTEN_ADDR",
    "INSTANCE_ID",
    "HUB_URL",
    "HUB_OPERATOR_KEY",
    "HUB_MASTER_KEY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "RUST_LOG",
    "HUB_AUTH_FAILURES_PER_MINUTE",
    "WEBHOOK_RETRY_SCHEDULE",
    "WEBHOOK_ALLOW_PRIVATE",
];

/// Secrets set while `--help` runs; none of them may show.
const SECRETS: &[(&str, &str)] = &[
    ("DATABASE_URL", "postgres://hub:db-password-4711@localhost/hub"),
    ("INSTANCE_DATABASE_URL", "postgres://alpha:db-password-4711@localhost/alpha"),
    ("HUB_MIGRATION_DATABASE_URL", "postgres://owner:owner-password-2024@localhost/hub"),
    ("HUB_OPERATOR_KEY", "operator-key-that-nobody-may-see-0123456789"),
    ("HUB_MASTER_KEY", "c2VjcmV0LW1hc3Rlci1rZXktMzItYnl0ZXMtbG9uZyE="),
    ("SMTP_URL", "smtp://mailer:smtp-password-0815@localhost:2525"),
    ("NATS_URL", "nats://relay:nats-password-1234@localhost:4222"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://tracer:otlp-password-5150@collector.example:4318"),
    ("VAN_API_URL", "https://van-user:van-password-6060@api.securevan.com"),
];

fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary(name)).args(args).env_clear().envs(env.iter().copied()).output().unwrap()
}

fn assert_help_lists(name: &str, variables: &[&str]) {
    let out = run(name, &["--help"], SECRETS);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for variable in variables {
        assert!(help.contains(&format!("[env: {variable}")), "`{name} --help` does not list {variable}:\n{help}");
    }
    for secret in [
        "db-password-4711",
        "owner-password-2024",
        "operator-key-that-nobody",
        "c2VjcmV0",
        "smtp-password",
        "nats-password",
        "otlp-password",
        "van-password",
    ] {
        assert!(!help.contains(secret), "`{name} --help` shows {secret}:\n{help}");
    }
}

#[test]
fn hub_help_lists_every_variable_of_the_contract_and_no_secret() {
    assert_help_lists("hub", HUB_VARIABLES);
}

#[test]
fn instance_help_lists_every_variable_of_the_contract_and_no_secret() {
    assert_help_lists("instance", INSTANCE_VARIABLES);
}

/// Starts `name serve` with `base` and `variable=value`: it must stop at once with exit 2,
/// naming the variable; a secret's value must not show.
fn assert_refused(name: &str, base: &[(&str, &str)], variable: &str, value: &str, secret: bool) {
    let mut env = base.to_vec();
    env.push((variable, value));
    let out = run(name, &["serve"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name} with {variable}={value}: {stderr}");
    assert!(stderr.contains(variable), "{name} with {variable}={value}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    if secret {
        assert!(!stderr.contains(value), "{variable}'s value shows: {stderr}");
    }
}

#[test]
fn invalid_values_stop_the_hub_with_an_error_naming_the_variable() {
    let base = [("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")];
    for (variable, value, secret) in [
        ("HUB_LISTEN_ADDR", "nowhere", false),
        ("HUB_AUTH_FAILURES_PER_MINUTE", "0", false),
        ("HUB_RATE_LIMIT_PER_MINUTE", "lots", false),
        ("HUB_MASTER_KEY", "c2hvcnQtbWFzdGVyLWtleQ==", true),
        ("HUB_OPERATOR_KEY", "too-short-operator-key", true),
        ("HUB_PUBLIC_URL", "ftp://admin.example.com", false),
        ("HUB_EVENTS_MAX_BYTES", "-5", false),
        ("DATABASE_LOCK_TIMEOUT_SECONDS", "soon", false),
        ("WEBHOOK_RETRY_SCHEDULE", "5,,60", false),
        ("WEBHOOK_ALLOW_PRIVATE", "perhaps", false),
    ] {
        assert_refused("hub", &base, variable, value, secret);
    }
    let out = run("hub", &["serve"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL is not set"));
}

#[test]
fn invalid_values_stop_an_instance_with_an_error_naming_the_variable() {
    let base = [("INSTANCE_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"), ("INSTANCE_ID", "alpha")];
    for (variable, value, secret) in [
        ("INSTANCE_LISTEN_ADDR", "nowhere", false),
        ("INSTANCE_ID", "Not Valid", false),
        ("HUB_MASTER_KEY", "c2hvcnQtbWFzdGVyLWtleQ==", true),
        ("HUB_AUTH_FAILURES_PER_MINUTE", "-1", false),
        ("INSTANCE_CONSUMER_STALL_SECONDS", "0", false),
        ("WEBHOOK_RETRY_SCHEDULE", "never", false),
    ] {
        assert_refused("instance", &base, variable, value, secret);
    }
    let out = run("instance", &["serve"], &[("INSTANCE_ID", "alpha")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("INSTANCE_DATABASE_URL is not set"));
}
