-- The data keys of the workspaces this instance serves, sealed by the master key exactly
-- as the hub keeps them. Fetched from a hub when the workspace's creation (or a secret
-- rotation) is applied, erased in the transaction that applies its deletion, so serving
-- a request never waits for a hub.
CREATE TABLE data_keys (
    workspace_id     uuid PRIMARY KEY,
    sealed_data_key  bytea NOT NULL,
    fetched_at       timestamptz NOT NULL DEFAULT now()
);
