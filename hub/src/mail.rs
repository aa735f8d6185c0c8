//! Email: an outbox written in the transaction of the event that causes the email, and a
//! sender task that delivers it over SMTP.
//!
//! Each row is claimed (`sending`, committed) before the SMTP exchange and marked `sent`
//! after it. A crash between the two leaves the row `sending`; the sweeper turns such rows
//! into `unknown` instead of sending them again, so no email goes out twice. Failures are
//! retried with exponential backoff; the API never waits for the mail server.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Notify;

use crate::columns::{EmailKind, OutboxStatus};
use crate::projections::{SqlStep, params};

/// An email to queue.
pub struct Email {
    pub kind: EmailKind,
    pub recipient: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Email {
    /// The outbox row, to commit with the command's events.
    pub fn outbox_step(self) -> SqlStep {
        SqlStep::new(
            "INSERT INTO outbox (kind, recipient, subject, text_body, html_body) VALUES ($1, $2, $3, $4, $5)",
            params![self.kind, self.recipient, self.subject, self.text, self.html],
        )
    }
}

/// Most emails of one kind an organization may make the platform send to one recipient
/// outside it in an hour; the last one says so.
pub const NOTICES_PER_HOUR: i64 = 20;

impl Email {
    /// The outbox row, to commit with the command's events, of an email `organization`
    /// sends outside itself and that must not be dropped: past [`NOTICES_PER_HOUR`] to one
    /// recipient in an hour, the commit is refused (`outbox_invitations_per_recipient`).
    pub fn outbox_step_of(self, organization: uuid::Uuid) -> SqlStep {
        SqlStep::new(
            "INSERT INTO outbox (kind, recipient, subject, text_body, html_body, organization_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            params![self.kind, self.recipient, self.subject, self.text, self.html, organization],
        )
    }

    /// The outbox row of an email `organization` makes the platform send to someone outside
    /// it, unless [`NOTICES_PER_HOUR`] of this kind already went to that recipient for it in
    /// the past hour (appends are serialized, so the count is exact). The last one allowed
    /// carries `last_note`, saying where to look instead.
    pub fn capped_outbox_step(self, organization: uuid::Uuid, last_note: (&str, &str)) -> SqlStep {
        SqlStep::new(
            "INSERT INTO outbox (kind, recipient, subject, text_body, html_body, organization_id) \
             SELECT $1::email_kind, $2::text, $3::text, \
                    CASE WHEN sent.n = $7::bigint - 1 THEN $4::text || $8::text ELSE $4 END, \
                    CASE WHEN sent.n = $7 - 1 THEN $5::text || $9::text ELSE $5 END, $6::uuid \
             FROM (SELECT count(*) AS n FROM outbox WHERE kind = $1 AND recipient = $2 AND organization_id = $6 \
                   AND created_at > now() - interval '1 hour') AS sent \
             WHERE sent.n < $7",
            params![
                self.kind,
                self.recipient,
                self.subject,
                self.text,
                self.html,
                organization,
                NOTICES_PER_HOUR,
                last_note.0.to_owned(),
                last_note.1.to_owned()
            ],
        )
    }
}

/// Escapes text for an HTML body.
pub fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid mail configuration: {0}")]
pub struct MailConfigError(String);

impl Mailer {
    pub fn new(smtp_url: &str, from: &str) -> Result<Self, MailConfigError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|_| MailConfigError("SMTP_URL is not a valid smtp:// or smtps:// URL".into()))?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        let from = from.parse().map_err(|_| MailConfigError("HUB_MAIL_FROM is not a valid mailbox".into()))?;
        Ok(Self { transport, from })
    }
}

/// Longest wait between two attempts at one email.
const MAX_BACKOFF_SECONDS: f64 = 30.0;
/// Attempts before an email that keeps failing is given up: about a day at the 30 s
/// backoff cap.
const MAX_ATTEMPTS: i32 = 2880;
/// A row `sending` for longer than this was orphaned by a crash.
const ORPHANED_AFTER_SECONDS: f64 = 120.0;

/// Delivers queued emails until the process ends (supervised in `tasks`). `wake` is signalled after commits that
/// queue mail; a timer covers the rest (other hubs' rows, retries).
pub fn spawn_sender(tasks: &Arc<shared::supervise::Tasks>, pool: Pool, mailer: Arc<Mailer>, wake: Arc<Notify>) {
    tasks.spawn("mail outbox sender", move || {
        let (pool, mailer, wake) = (pool.clone(), mailer.clone(), wake.clone());
        async move {
            loop {
                match deliver_next(&pool, &mailer).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(error) => tracing::warn!(%error, "mail outbox unavailable; will retry"),
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
            }
        }
    });
}

/// Marks rows orphaned in `sending` as `unknown`, every minute.
pub fn spawn_sweeper(pool: Pool) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        loop {
            ticker.tick().await;
            let swept = async {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                client
                    .execute(
                        "UPDATE outbox SET status = 'unknown', last_error = 'the sending process stopped mid-delivery', \
                         text_body = NULL, html_body = NULL \
                         WHERE status = 'sending' AND claimed_at < now() - make_interval(secs => $1)",
                        &[&ORPHANED_AFTER_SECONDS],
                    )
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match swept {
                Ok(0) => {}
                Ok(n) => tracing::error!(
                    emails = n,
                    "emails in doubt after a crash were not resent; see outbox status 'unknown'"
                ),
                Err(error) => tracing::warn!(%error, "could not sweep the outbox"),
            }
        }
    });
}

/// Claims and sends one due email; `Ok(false)` when none is due.
async fn deliver_next(pool: &Pool, mailer: &Mailer) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let claimed = client
        .query_opt(
            "UPDATE outbox SET status = $1, claimed_at = now(), attempts = attempts + 1 \
             WHERE id = (SELECT id FROM outbox WHERE status = $2 AND next_attempt_at <= now() \
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING id, recipient, subject, text_body, html_body, attempts",
            &[&OutboxStatus::Sending, &OutboxStatus::Pending],
        )
        .await?;
    let Some(row) = claimed else { return Ok(false) };
    let id: i64 = row.try_get("id")?;
    let attempts: i32 = row.try_get("attempts")?;
    let message = build(
        mailer,
        row.try_get("recipient")?,
        row.try_get("subject")?,
        row.try_get("text_body")?,
        row.try_get("html_body")?,
    );
    let outcome = match message {
        Ok(message) => mailer.transport.send(message).await.map(|_| ()).map_err(|e| (e.is_permanent(), e.to_string())),
        Err(error) => Err((true, error)),
    };
    match outcome {
        Ok(()) => {
            client
                .execute(
                    "UPDATE outbox SET status = $2, sent_at = now(), text_body = NULL, html_body = NULL, \
                     last_error = NULL WHERE id = $1",
                    &[&id, &OutboxStatus::Sent],
                )
                .await?;
            tracing::info!(outbox_id = id, "email sent");
        }
        Err((true, error)) => {
            client
                .execute(
                    "UPDATE outbox SET status = $3, last_error = $2, text_body = NULL, html_body = NULL \
                     WHERE id = $1",
                    &[&id, &error, &OutboxStatus::Failed],
                )
                .await?;
            tracing::error!(outbox_id = id, %error, "email refused for good");
        }
        Err((false, error)) if attempts >= MAX_ATTEMPTS => {
            client
                .execute(
                    "UPDATE outbox SET status = $3, last_error = $2, text_body = NULL, html_body = NULL \
                     WHERE id = $1",
                    &[&id, &format!("gave up after {attempts} attempts: {error}"), &OutboxStatus::Failed],
                )
                .await?;
            tracing::error!(outbox_id = id, attempts, %error, "email abandoned");
        }
        Err((false, error)) => {
            let backoff = 2f64.powi(attempts.min(10)).min(MAX_BACKOFF_SECONDS);
            client
                .execute(
                    "UPDATE outbox SET status = $4, last_error = $2, \
                     next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
                    &[&id, &error, &backoff, &OutboxStatus::Pending],
                )
                .await?;
            tracing::warn!(outbox_id = id, attempts, %error, "email not sent; will retry");
        }
    }
    Ok(true)
}

fn build(
    mailer: &Mailer,
    recipient: String,
    subject: String,
    text: Option<String>,
    html: Option<String>,
) -> Result<Message, String> {
    let to: Mailbox = recipient.parse().map_err(|_| "invalid recipient address".to_owned())?;
    Message::builder()
        .from(mailer.from.clone())
        .to(to)
        .subject(subject)
        .multipart(MultiPart::alternative_plain_html(text.unwrap_or_default(), html.unwrap_or_default()))
        .map_err(|e| e.to_string())
}
