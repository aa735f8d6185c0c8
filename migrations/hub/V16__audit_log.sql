-- The audit log: one row per event of the log, who did what to which resource, with the
-- event's data stripped of every secret (see `hub::projections::audit_log`). Derived from
-- the log alone, written in the append's transaction and rebuilt by
-- `hub projections rebuild`.
CREATE TABLE audit_log (
    position bigint PRIMARY KEY,
    -- The event's id (unique in the log already: no index of its own on the write path).
    id uuid NOT NULL,
    event_type text NOT NULL,
    recorded_at timestamptz NOT NULL,
    actor_type actor_type NOT NULL,
    actor_id text,
    actor_ip text,
    organization_id uuid NOT NULL,
    -- Null for an event of the organization as a whole (its keys, users and settings).
    workspace_id uuid,
    resource_type text NOT NULL
        CHECK (resource_type IN ('organization', 'workspace', 'api_key', 'user', 'invitation', 'member')),
    resource_id uuid NOT NULL,
    data jsonb NOT NULL,
    request_id text
);

-- Every list is an organization's rows, newest first; each filter has its own way in.
CREATE INDEX audit_log_organization ON audit_log (organization_id, position DESC);
CREATE INDEX audit_log_workspace ON audit_log (workspace_id, position DESC) WHERE workspace_id IS NOT NULL;
CREATE INDEX audit_log_actor ON audit_log (actor_id, position DESC) WHERE actor_id IS NOT NULL;
CREATE INDEX audit_log_event_type ON audit_log (organization_id, event_type, position DESC);
CREATE INDEX audit_log_recorded_at ON audit_log (recorded_at);
