//! Interactions API key commands: create (with the emails it sends and, for a source app,
//! its withheld secret), delete, and the source app's one-time claim of the secret.
//!
//! A withheld secret is sealed under a data key of its own, itself sealed by the master key
//! in `withheld_secret_keys` (written in the creating commit). The claim opens it and
//! destroys that data key in the commit that records the claim, so the event's
//! `sealed_secret` can never be opened again, replays included.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use shared::Metadata;
use shared::crypto;
use shared::domain::Aggregate;
use shared::domain::interaction_keys::{InteractionKeyCommand, NewInteractionKey};
use shared::domain::workspace::{Workspace, WorkspaceCommand};
use shared::events::app::AppKind;
use shared::events::workspace::Destination;
use shared::keys::{GeneratedKey, KeyKind};
use shared::scope::Scope;
use uuid::Uuid;

use super::load;
use crate::columns::EmailKind;
use crate::commands;
use crate::http::AppState;
use crate::http::context::Ctx;
use crate::http::error::ApiError;
use crate::mail::{Email, html_escape};
use crate::projections::{SqlStep, params};

/// What a create request asks for.
pub struct Create {
    pub name: String,
    pub destination: Destination,
    pub source_app_id: Option<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A created key; its secret only when no source app withholds it.
pub struct Created {
    pub id: Uuid,
    pub secret: Option<GeneratedKey>,
}

/// A partner app as a create reads it.
struct App {
    name: String,
    contact_email: String,
}

/// The context a withheld secret's data key is sealed under (by the master key).
fn data_key_context(interaction_key_id: Uuid) -> String {
    format!("admin-api/withheld-data-key/{interaction_key_id}")
}

/// The context of a withheld secret (under its own data key).
fn secret_context(interaction_key_id: Uuid) -> String {
    format!("admin-api/withheld-secret/{interaction_key_id}")
}

pub async fn create(state: &AppState, ctx: &Ctx, workspace_id: Uuid, request: Create) -> Result<Created, ApiError> {
    ctx.principal.require(Scope::InteractionKeysWrite)?;
    let workspace = super::workspaces::visible(state, &ctx.principal, workspace_id).await?;
    let client = state.pool.get().await?;
    let destination_app = match request.destination {
        Destination::App { app_id } => Some(live_app(&**client, app_id, "destination", AppKind::Destination).await?),
        Destination::ExternalKey { .. } => None,
    };
    let source_app = match request.source_app_id {
        Some(app_id) => Some(live_app(&**client, app_id, "source_app_id", AppKind::Source).await?),
        None => None,
    };
    let organization: String = client
        .query_opt("SELECT name FROM organizations WHERE id = $1", &[&workspace.state.organization_id])
        .await?
        .ok_or(ApiError::NotFound("workspace"))?
        .try_get("name")?;
    let owners: Vec<String> = if source_app.is_some() {
        client
            .query(
                "SELECT u.email FROM members m JOIN users u ON u.id = m.user_id \
                 WHERE m.workspace_id = $1 AND m.role = 'owner' AND u.status = 'active' ORDER BY u.email",
                &[&workspace_id],
            )
            .await?
            .iter()
            .map(|row| row.try_get("email"))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    drop(client);

    let id = Uuid::now_v7();
    let key = GeneratedKey::generate(KeyKind::Interaction);
    let withheld = source_app.is_some().then(|| {
        let data_key = crypto::random_key();
        let sealed_data_key = crypto::seal(state.master_key.expose_secret(), &data_key, &data_key_context(id));
        let sealed_secret = crypto::seal(&data_key, key.expose().as_bytes(), &secret_context(id));
        (sealed_data_key, sealed_secret)
    });
    let new = NewInteractionKey {
        id,
        name: request.name,
        destination: request.destination,
        source_app_id: request.source_app_id,
        key_hash: state.auth.hasher().hash(key.expose()),
        partial_key_hint: key.hint(),
        expires_at: request.expires_at,
        sealed_secret: withheld.as_ref().map(|(_, sealed)| sealed.clone()),
        created_by: ctx.metadata.actor.clone(),
        now: Utc::now(),
    };
    commands::run::<Workspace>(&state.store, workspace_id, workspace, None, &ctx.metadata, |w| {
        let events =
            w.decide(WorkspaceCommand::InteractionKey(InteractionKeyCommand::Create(Box::new(new.clone()))))?;
        let mut extra = Vec::new();
        if let Some((sealed_data_key, _)) = &withheld {
            extra.push(SqlStep::new(
                "INSERT INTO withheld_secret_keys (interaction_key_id, sealed_data_key) VALUES ($1, $2)",
                params![id, sealed_data_key.clone()],
            ));
        }
        let notice = Notice { organization: &organization, workspace: &w.name, key_name: new.name.trim(), key_id: id };
        if let Some(app) = &source_app {
            extra.extend(owners.iter().map(|owner| notice.generated(owner, &app.name).outbox_step()));
        }
        if let Some(app) = &destination_app {
            // The contact is outside the organization, which chooses the names the email
            // shows: a capped number per hour, the rest to be found in the partner list.
            let last_note = (
                "\nThis is the last email this hour about keys this organization routes to your app: further \
                 ones are not emailed until the hour is over. GET /v1/partner/interaction-keys lists them all.\n",
                "<p>This is the last email this hour about keys this organization routes to your app: further \
                 ones are not emailed until the hour is over. <code>GET /v1/partner/interaction-keys</code> lists \
                 them all.</p>",
            );
            extra.push(notice.routed(&app.contact_email, &app.name).capped_outbox_step(w.organization_id, last_note));
        }
        Ok((events, extra))
    })
    .await?;
    if source_app.is_some() || destination_app.is_some() {
        state.mail_wake.notify_one();
    }
    Ok(Created { id, secret: source_app.is_none().then_some(key) })
}

/// Revokes a key of a workspace (`DELETE .../interaction-keys/{key_id}`).
pub async fn delete(state: &AppState, ctx: &Ctx, workspace_id: Uuid, key_id: Uuid) -> Result<(), ApiError> {
    ctx.principal.require(Scope::InteractionKeysWrite)?;
    let workspace = super::workspaces::visible(state, &ctx.principal, workspace_id).await?;
    commands::run::<Workspace>(&state.store, workspace_id, workspace, ctx.if_match, &ctx.metadata, |w| {
        let command = InteractionKeyCommand::Delete { interaction_key_id: key_id };
        Ok((w.decide(WorkspaceCommand::InteractionKey(command))?, Vec::new()))
    })
    .await?;
    Ok(())
}

/// The source app `app_id` takes the withheld secret of key `key_id`: once, and only it (the
/// key's destination app is refused, any other app finds no such key).
pub async fn claim_secret(
    state: &AppState,
    metadata: &Metadata,
    app_id: Uuid,
    key_id: Uuid,
    ip: Option<String>,
) -> Result<SecretString, ApiError> {
    let not_found = || ApiError::NotFound("interaction key");
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT workspace_id, revoked_at IS NOT NULL AS revoked, source_app_id FROM interaction_keys WHERE id = $1",
            &[&key_id],
        )
        .await?
        .ok_or_else(not_found)?;
    let workspace_id: Uuid = row.try_get("workspace_id")?;
    // A revoked key has left the workspace's state; the read model still knows it, and
    // its source app learns why there is nothing to claim.
    if row.try_get::<_, bool>("revoked")? && row.try_get::<_, Option<Uuid>>("source_app_id")? == Some(app_id) {
        return Err(ApiError::Gone { code: "key_revoked", detail: "this key was revoked".into() });
    }
    let workspace = load::load::<Workspace>(&state.store, workspace_id).await?;
    let command =
        WorkspaceCommand::InteractionKey(InteractionKeyCommand::ClaimSecret { interaction_key_id: key_id, app_id, ip });
    let found = |error: ApiError| match error {
        ApiError::NotFound(_) => not_found(),
        other => other,
    };
    // The rules first (on the latest state when they refuse), then the secret is opened.
    let workspace = match workspace.state.decide(command.clone()) {
        Ok(_) => workspace,
        Err(_) => {
            let latest = load::refresh(&state.store, workspace_id, workspace).await?;
            latest.state.decide(command.clone()).map_err(|e| found(e.into()))?;
            latest
        }
    };
    let sealed_secret = workspace
        .state
        .interaction_keys
        .get(&key_id)
        .and_then(|key| key.sealed_secret.clone())
        .ok_or_else(not_found)?;
    let sealed_data_key: Option<Vec<u8>> = client
        .query_opt("SELECT sealed_data_key FROM withheld_secret_keys WHERE interaction_key_id = $1", &[&key_id])
        .await?
        .and_then(|row| row.get("sealed_data_key"));
    drop(client);
    let sealed_data_key = sealed_data_key.ok_or(ApiError::Gone {
        code: "secret_already_retrieved",
        detail: "this key's secret is no longer held".into(),
    })?;
    let data_key: [u8; 32] =
        crypto::open(state.master_key.expose_secret(), &sealed_data_key, &data_key_context(key_id))
            .map_err(|_| ApiError::internal("a withheld secret's data key does not open with the master key"))?
            .try_into()
            .map_err(|_| ApiError::internal("a withheld secret's data key has the wrong length"))?;
    let data_key = SecretBox::new(Box::new(data_key));
    let sealed = hex::decode(&sealed_secret).map_err(|_| ApiError::internal("a sealed secret is not hex"))?;
    let secret = crypto::open(data_key.expose_secret(), &sealed, &secret_context(key_id))
        .map_err(|_| ApiError::internal("a withheld secret does not open with its data key"))?;
    let secret =
        SecretString::from(String::from_utf8(secret).map_err(|_| ApiError::internal("a withheld secret is not text"))?);
    // The data key goes with the claim's commit; a concurrent claim conflicts on the
    // stream's version and is then refused as already retrieved.
    commands::run::<Workspace>(&state.store, workspace_id, workspace, None, metadata, |w| {
        let events = w.decide(command.clone()).map_err(|e| found(e.into()))?;
        Ok((events, vec![destroy_data_key(key_id)]))
    })
    .await?;
    Ok(secret)
}

/// Erases a withheld secret's data key.
fn destroy_data_key(key_id: Uuid) -> SqlStep {
    SqlStep::new(
        "UPDATE withheld_secret_keys SET sealed_data_key = NULL, destroyed_at = now() \
         WHERE interaction_key_id = $1 AND sealed_data_key IS NOT NULL",
        params![key_id],
    )
}

/// A live app of `kind`; an unknown or revoked one is a 422 on `field`, another kind a 422
/// `wrong_app_kind`.
async fn live_app(
    client: &impl tokio_postgres::GenericClient,
    app_id: Uuid,
    field: &'static str,
    kind: AppKind,
) -> Result<App, ApiError> {
    let row = client
        .query_opt("SELECT name, kind, contact_email FROM apps WHERE id = $1 AND revoked_at IS NULL", &[&app_id])
        .await?
        .ok_or_else(|| ApiError::invalid(field, "exists", format!("{field} names no live partner app")))?;
    let actual: AppKind = row.try_get("kind")?;
    if actual != kind {
        return Err(ApiError::Unprocessable {
            code: "wrong_app_kind",
            detail: format!("{field} must name an app of kind `{}`, not `{}`", kind.as_str(), actual.as_str()),
        });
    }
    Ok(App { name: row.try_get("name")?, contact_email: row.try_get("contact_email")? })
}

/// What the emails about a new key say: where it is and what it is called, never its secret.
struct Notice<'a> {
    organization: &'a str,
    workspace: &'a str,
    key_name: &'a str,
    key_id: Uuid,
}

impl Notice<'_> {
    fn facts(&self) -> (String, String) {
        let (o, w, k, id) = (self.organization, self.workspace, self.key_name, self.key_id);
        let text = format!("Organization: {o}\nWorkspace: {w}\nKey: {k}\nKey id: {id}\n");
        let html = format!(
            "<ul><li>Organization: {}</li><li>Workspace: {}</li><li>Key: {}</li><li>Key id: {id}</li></ul>",
            html_escape(o),
            html_escape(w),
            html_escape(k)
        );
        (text, html)
    }

    /// To a workspace owner: a key was generated for a source app.
    fn generated(&self, owner: &str, app: &str) -> Email {
        let (facts, facts_html) = self.facts();
        Email {
            kind: EmailKind::InteractionKeyGenerated,
            recipient: owner.to_owned(),
            subject: format!("An interaction key was generated for {app}"),
            text: format!(
                "An Interactions API key was generated in your workspace for the technology partner app \"{app}\".\n\n\
                 {facts}\nThe app retrieves the key itself, once; it is shown to no one else.\n"
            ),
            html: format!(
                "<p>An Interactions API key was generated in your workspace for the technology partner app \
                 <strong>{}</strong>.</p>{facts_html}<p>The app retrieves the key itself, once; it is shown to no \
                 one else.</p>",
                html_escape(app)
            ),
        }
    }

    /// To a destination app's contact: a new key is routed to the app.
    fn routed(&self, contact: &str, app: &str) -> Email {
        let (facts, facts_html) = self.facts();
        Email {
            kind: EmailKind::InteractionKeyRouted,
            recipient: contact.to_owned(),
            subject: format!("A new interaction key is routed to {app}"),
            text: format!("A new Interactions API key now routes interactions to your app \"{app}\".\n\n{facts}"),
            html: format!(
                "<p>A new Interactions API key now routes interactions to your app <strong>{}</strong>.</p>{facts_html}",
                html_escape(app)
            ),
        }
    }
}
