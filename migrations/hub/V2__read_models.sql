-- Hub read models. Derived data: the projections update them in the same transaction as
-- the append, and `hub projections rebuild` recreates them from the log.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL,
    plan        text NOT NULL,
    settings    jsonb NOT NULL DEFAULT '{}',
    status      text NOT NULL CHECK (status IN ('active', 'deleted')),
    version     bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX organizations_listing ON organizations (status, created_at, id);

CREATE TABLE api_keys (
    id                   uuid PRIMARY KEY,
    organization_id      uuid NOT NULL,
    name                 text NOT NULL,
    scopes               text[] NOT NULL,
    workspace_ids        uuid[] NOT NULL,
    expires_at           timestamptz,
    allowed_ips          text[] NOT NULL,
    owner_user_id        uuid,
    created_by_type      text NOT NULL,
    created_by_id        text,
    key_hash             bytea NOT NULL UNIQUE,
    partial_key_hint     text NOT NULL,
    previous_key_hash    bytea,
    previous_expires_at  timestamptz,
    revoked_at           timestamptz,
    version              bigint NOT NULL,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);
CREATE INDEX api_keys_previous_hash ON api_keys (previous_key_hash) WHERE previous_key_hash IS NOT NULL;
CREATE INDEX api_keys_listing ON api_keys (organization_id, created_at, id);

CREATE TABLE workspaces (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL,
    parent_id       uuid,
    instance_id     text,
    name            text NOT NULL,
    status          text NOT NULL CHECK (status IN ('active', 'archived', 'deleted')),
    settings        jsonb NOT NULL,
    webhook_uris    jsonb NOT NULL,
    public_keys     jsonb NOT NULL,
    secret_version  integer NOT NULL DEFAULT 0,
    -- Ids from the root down to this workspace itself: subtree tests are array overlaps.
    ancestors       uuid[] NOT NULL,
    version         bigint NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
-- Names are unique among live siblings; enforced in the append transaction.
CREATE UNIQUE INDEX workspaces_sibling_name ON workspaces
    (organization_id, COALESCE(parent_id, '00000000-0000-0000-0000-000000000000'::uuid), lower(name))
    WHERE status <> 'deleted';
CREATE INDEX workspaces_ancestors ON workspaces USING gin (ancestors);
CREATE INDEX workspaces_listing ON workspaces (organization_id, created_at, id);
CREATE INDEX workspaces_parent ON workspaces (parent_id);

-- Refuses a move that would put a workspace under itself, in the append transaction,
-- so two concurrent moves cannot build a cycle.
CREATE FUNCTION workspaces_move(moved uuid, new_parent uuid, at timestamptz, new_version bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    prefix uuid[];
BEGIN
    IF new_parent IS NULL THEN
        prefix := '{}';
    ELSE
        SELECT ancestors INTO prefix FROM workspaces WHERE id = new_parent;
        IF prefix IS NULL THEN
            RAISE EXCEPTION 'parent workspace % does not exist', new_parent
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'workspaces_parent';
        END IF;
        IF moved = ANY (prefix) THEN
            RAISE EXCEPTION 'moving workspace % under % would make a cycle', moved, new_parent
                USING ERRCODE = 'check_violation', CONSTRAINT = 'workspaces_no_cycle';
        END IF;
    END IF;
    UPDATE workspaces w
       SET ancestors = prefix || w.ancestors[array_position(w.ancestors, moved):]
     WHERE w.ancestors @> ARRAY[moved];
    UPDATE workspaces SET parent_id = new_parent, version = new_version, updated_at = at WHERE id = moved;
END;
$$;

-- Idempotency keys of POST requests, per authenticated principal.
CREATE TABLE idempotency_keys (
    principal        text NOT NULL,
    key              text NOT NULL,
    request_hash     bytea NOT NULL,
    locked_until     timestamptz,
    response_status  integer,
    response_headers jsonb,
    response_body    bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

-- When each admin key was last used: operational data, written in batches, not events.
CREATE TABLE api_key_usage (
    key_id        uuid PRIMARY KEY,
    last_used_at  timestamptz NOT NULL
);
