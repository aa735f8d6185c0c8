-- Per-workspace data keys, sealed by the master key. Mutable on purpose: deleting a
-- workspace erases its data key, which makes the sealed secrets left in the immutable
-- event log unreadable for good (crypto-shredding), replays included.
CREATE TABLE keyring (
    workspace_id     uuid PRIMARY KEY,
    sealed_data_key  bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    destroyed_at     timestamptz
);
