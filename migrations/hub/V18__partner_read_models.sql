-- Read models of the Interactions API: technology partner apps (`app-<uuid>` streams),
-- external keys and interaction keys (events of their workspace's stream). Derived data,
-- written in the append's transaction and rebuilt by `hub projections rebuild`.
CREATE TYPE external_provider AS ENUM ('van');
CREATE TYPE app_kind AS ENUM ('source', 'destination');

CREATE TABLE apps (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    kind app_kind NOT NULL,
    contact_email text NOT NULL,
    -- The peppered SHA-256 of the app key.
    key_hash bytea NOT NULL,
    partial_key_hint text NOT NULL,
    revoked_at timestamptz,
    version integer NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX apps_key_hash ON apps (key_hash);
CREATE INDEX apps_created ON apps (created_at DESC, id DESC);

CREATE TABLE external_keys (
    id uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id),
    organization_id uuid NOT NULL,
    provider external_provider NOT NULL,
    name text NOT NULL,
    -- The credential's last 4 characters; the credential itself is only in the log, sealed.
    key_hint text NOT NULL,
    settings jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX external_keys_workspace ON external_keys (workspace_id, created_at DESC, id DESC);

CREATE TABLE interaction_keys (
    id uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id),
    organization_id uuid NOT NULL,
    name text NOT NULL,
    -- `destination` as the API shows it: {"type":"external_key","external_key_id"} or
    -- {"type":"app","app_id"}; the two ids also in columns of their own for lookups.
    destination jsonb NOT NULL,
    destination_external_key_id uuid,
    destination_app_id uuid,
    source_app_id uuid,
    -- The peppered SHA-256 of the key.
    key_hash bytea NOT NULL,
    partial_key_hint text NOT NULL,
    expires_at timestamptz,
    -- Null without a source app; false until the source app claims the secret.
    secret_retrieved boolean,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CHECK ((destination_external_key_id IS NULL) <> (destination_app_id IS NULL)),
    CHECK ((source_app_id IS NULL) = (secret_retrieved IS NULL))
);
CREATE INDEX interaction_keys_workspace ON interaction_keys (workspace_id, created_at DESC, id DESC);
CREATE INDEX interaction_keys_source_app ON interaction_keys (source_app_id, created_at DESC, id DESC)
    WHERE source_app_id IS NOT NULL;
CREATE INDEX interaction_keys_destination_app ON interaction_keys (destination_app_id, created_at DESC, id DESC)
    WHERE destination_app_id IS NOT NULL;
CREATE INDEX interaction_keys_destination_external_key ON interaction_keys (destination_external_key_id)
    WHERE destination_external_key_id IS NOT NULL;
