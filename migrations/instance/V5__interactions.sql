-- The interaction keys of the workspaces this instance serves, keyed by the key's peppered
-- hash so `POST /v1/interactions` finds its key with one index lookup. Written from the
-- workspace's events in the transaction that applies them; never a secret, plain or sealed.
-- A revoked key leaves the workspace's state, and its row goes with it.
CREATE TABLE interaction_keys (
    key_hash      bytea PRIMARY KEY,
    id            uuid NOT NULL UNIQUE,
    workspace_id  uuid NOT NULL,
    expires_at    timestamptz
);
CREATE INDEX interaction_keys_workspace ON interaction_keys (workspace_id);

-- What `POST /v1/interactions` accepted, kept until its workspace is deleted.
CREATE TABLE interactions (
    id                  uuid PRIMARY KEY,
    workspace_id        uuid NOT NULL,
    interaction_key_id  uuid NOT NULL,
    type                text NOT NULL,
    payload             jsonb NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX interactions_workspace ON interactions (workspace_id);

CREATE TYPE delivery_status AS ENUM ('pending', 'succeeded', 'failed');

-- The webhook outbox: one delivery per `webhook_uris` entry of the workspace when the
-- interaction was accepted, written in the same transaction as the interaction.
CREATE TABLE deliveries (
    id                uuid PRIMARY KEY,
    interaction_id    uuid NOT NULL REFERENCES interactions (id) ON DELETE CASCADE,
    workspace_id      uuid NOT NULL,
    url               text NOT NULL,
    status            delivery_status NOT NULL DEFAULT 'pending',
    attempts          integer NOT NULL DEFAULT 0,
    last_status_code  integer,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_interaction ON deliveries (interaction_id);
