-- Usage per organization, workspace, interaction key and hour (operational data, never
-- events): instances report the interactions and deliveries they counted, hubs add the
-- admin requests they served. `workspace_id` is null for an admin request of the
-- organization as a whole; `interaction_key_id` is null for admin requests.
CREATE TABLE usage_counters (
    organization_id        uuid NOT NULL,
    workspace_id           uuid,
    interaction_key_id     uuid,
    hour                   timestamptz NOT NULL,
    interactions_accepted  bigint NOT NULL DEFAULT 0,
    interactions_rejected  bigint NOT NULL DEFAULT 0,
    deliveries_succeeded   bigint NOT NULL DEFAULT 0,
    deliveries_failed      bigint NOT NULL DEFAULT 0,
    admin_requests         bigint NOT NULL DEFAULT 0,
    CONSTRAINT usage_counters_bucket UNIQUE NULLS NOT DISTINCT (organization_id, workspace_id, interaction_key_id, hour)
);
CREATE INDEX usage_counters_hour ON usage_counters (organization_id, hour);

-- The instances' usage reports already added, so a retried report counts once.
CREATE TABLE usage_reports_applied (
    id           uuid PRIMARY KEY,
    instance_id  text NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_reports_applied_at ON usage_reports_applied (applied_at);
