-- An instance's materialized state: one row per workspace it serves, holding the
-- workspace's state (folded by the same pure `apply` as the hub's domain) and its
-- checkpoint: the stream version, position and hash of the last event applied. Each
-- event is applied together with its checkpoint in one transaction, so a redelivered
-- event is a no-op and an event ahead of the checkpoint is a gap.

CREATE TABLE workspaces (
    id              uuid PRIMARY KEY,
    stream_version  bigint NOT NULL,
    position        bigint NOT NULL,
    event_hash      bytea NOT NULL,
    -- NULL once the workspace is deleted: its state (secrets included) is dropped, the
    -- checkpoint stays so late redeliveries remain no-ops.
    state           jsonb,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE instance_state (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    applied_position  bigint NOT NULL
);
INSERT INTO instance_state (applied_position) VALUES (0);
