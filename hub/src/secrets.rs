//! Workspace signing secrets: sealed under a per-workspace data key, which is itself
//! sealed by the master key and kept in the mutable `keyring` table.

use secrecy::{ExposeSecret, SecretBox};
use shared::crypto;
use shared::keys::{GeneratedKey, KeyKind};
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::projections::{SqlStep, params};

pub type MasterKey = SecretBox<[u8; 32]>;

/// A fresh data key for a new workspace, and its form sealed by the master key.
pub fn new_data_key(master: &MasterKey, workspace_id: Uuid) -> (SecretBox<[u8; 32]>, Vec<u8>) {
    let key = crypto::random_key();
    let sealed = crypto::seal(master.expose_secret(), &key, &crypto::data_key_context(workspace_id));
    (SecretBox::new(Box::new(key)), sealed)
}

/// The keyring row of a new workspace, in its creating commit.
pub fn keyring_row(workspace_id: Uuid, sealed_data_key: &[u8]) -> SqlStep {
    SqlStep::new(
        "INSERT INTO keyring (workspace_id, sealed_data_key) VALUES ($1, $2)",
        params![workspace_id, sealed_data_key.to_vec()],
    )
}

/// Erases the data keys of deleted workspaces, in the deleting commit.
pub fn shred(workspace_ids: &[Uuid]) -> SqlStep {
    SqlStep::new(
        "UPDATE keyring SET sealed_data_key = NULL, destroyed_at = now() WHERE workspace_id = ANY($1)",
        params![workspace_ids.to_vec()],
    )
}

/// A keyring row (`workspace_id`, `sealed_data_key`) as the instances receive it.
pub fn data_key_item(row: &tokio_postgres::Row) -> shared::link::DataKey {
    let sealed: Option<Vec<u8>> = row.get("sealed_data_key");
    shared::link::DataKey { workspace_id: row.get("workspace_id"), sealed_data_key: sealed.map(hex::encode) }
}

/// The workspace's data key, opened with the master key.
pub async fn data_key(
    client: &impl tokio_postgres::GenericClient,
    master: &MasterKey,
    workspace_id: Uuid,
) -> Result<SecretBox<[u8; 32]>, ApiError> {
    let row = client
        .query_opt("SELECT sealed_data_key FROM keyring WHERE workspace_id = $1", &[&workspace_id])
        .await?
        .ok_or(ApiError::NotFound("workspace key"))?;
    let sealed: Option<Vec<u8>> = row.try_get("sealed_data_key")?;
    let sealed =
        sealed.ok_or(ApiError::Gone { code: "key_destroyed", detail: "the workspace's keys were destroyed".into() })?;
    let key = crypto::open(master.expose_secret(), &sealed, &crypto::data_key_context(workspace_id))
        .map_err(|_| ApiError::internal("a data key does not open with the master key"))?;
    let key: [u8; 32] = key.try_into().map_err(|_| ApiError::internal("a data key has the wrong length"))?;
    Ok(SecretBox::new(Box::new(key)))
}

/// A new signing secret of `version`, and its sealed form for the event.
pub fn new_secret(data_key: &SecretBox<[u8; 32]>, workspace_id: Uuid, version: i32) -> (GeneratedKey, Vec<u8>) {
    let secret = GeneratedKey::generate(KeyKind::WorkspaceSecret);
    let sealed = crypto::seal(
        data_key.expose_secret(),
        secret.expose().as_bytes(),
        &crypto::secret_context(workspace_id, version),
    );
    (secret, sealed)
}

/// Opens a sealed signing secret (hex, as in the events).
pub fn open_secret(
    data_key: &SecretBox<[u8; 32]>,
    workspace_id: Uuid,
    version: i32,
    sealed_hex: &str,
) -> Result<SecretBox<Vec<u8>>, ApiError> {
    let sealed = hex::decode(sealed_hex).map_err(|_| ApiError::internal("a sealed secret is not hex"))?;
    crypto::open(data_key.expose_secret(), &sealed, &crypto::secret_context(workspace_id, version))
        .map(|plain| SecretBox::new(Box::new(plain)))
        .map_err(|_| ApiError::internal("a workspace secret does not open with its data key"))
}
