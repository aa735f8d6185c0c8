//! Partner app commands: register (the operator; the answer carries the app key, shown
//! this once) and delete, which revokes the app and, in the same commit, every interaction
//! key provisioned to it or routed to it, by events in their workspaces' streams.

use shared::domain::Aggregate;
use shared::domain::app::{App, AppCommand};
use shared::domain::workspace::{Workspace, WorkspaceCommand};
use shared::events::app::AppKind;
use shared::keys::{GeneratedKey, KeyKind};
use uuid::Uuid;

use super::cache::Loaded;
use super::load;
use crate::commands;
use crate::deletion::{decide_each, load_many, run};
use crate::http::AppState;
use crate::http::context::Ctx;
use crate::http::error::ApiError;
use crate::store::Commit;

/// What a register request asks for.
pub struct Register {
    pub name: String,
    pub kind: AppKind,
    pub contact_email: String,
}

/// Registers an app (operator only); returns its id, its state and its key.
pub async fn register(
    state: &AppState,
    ctx: &Ctx,
    request: Register,
) -> Result<(Uuid, Loaded<App>, GeneratedKey), ApiError> {
    ctx.principal.require_operator()?;
    let key = GeneratedKey::generate(KeyKind::PartnerApp);
    let Register { name, kind, contact_email } = request;
    let command = AppCommand::Register {
        name,
        kind,
        contact_email,
        key_hash: state.auth.hasher().hash(key.expose()),
        partial_key_hint: key.hint(),
    };
    let id = Uuid::now_v7();
    // A new id: the stream cannot exist, so there is nothing to read.
    let done = commands::run::<App>(&state.store, id, load::fresh(), None, &ctx.metadata, |app| {
        Ok((app.decide(command.clone())?, Vec::new()))
    })
    .await?;
    Ok((id, done.loaded, key))
}

/// Deletes app `id` (operator only): the app is revoked, its key fails from the next
/// request on, and every live interaction key provisioned to it or routed to it is revoked
/// with reason `app_deleted`. Deleting a revoked app again revokes what is left.
pub async fn delete(state: &AppState, ctx: &Ctx, id: Uuid) -> Result<(), ApiError> {
    ctx.principal.require_operator()?;
    let store = &state.store;
    let metadata = &ctx.metadata;
    run(store, metadata, || async {
        let mut appends = Vec::new();
        let app = load_many::<App>(store, &[id]).await?;
        if let (Some(expected), Some((_, _, version))) = (ctx.if_match, app.first())
            && expected != *version
        {
            return Err(ApiError::PreconditionFailed);
        }
        decide_each(&app, |a| a.decide(AppCommand::Revoke), metadata, &mut appends)?;
        let workspaces = load_many::<Workspace>(store, &workspaces_with_keys_of(state, id).await?).await?;
        decide_each(&workspaces, |w| w.decide(WorkspaceCommand::RevokeAppKeys { app_id: id }), metadata, &mut appends)?;
        Ok(Commit { appends, extra: Vec::new() })
    })
    .await
}

/// The live workspaces holding a live interaction key of the app.
async fn workspaces_with_keys_of(state: &AppState, app_id: Uuid) -> Result<Vec<Uuid>, ApiError> {
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT DISTINCT k.workspace_id FROM interaction_keys k JOIN workspaces w ON w.id = k.workspace_id \
             WHERE (k.source_app_id = $1 OR k.destination_app_id = $1) AND k.revoked_at IS NULL \
             AND w.status <> 'deleted' ORDER BY k.workspace_id",
            &[&app_id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.try_get("workspace_id")).collect::<Result<_, _>>()?)
}
