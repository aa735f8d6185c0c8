-- What this instance counted per workspace, interaction key and hour (operational data,
-- not events): interactions accepted and refused, webhook deliveries that succeeded and
-- that failed for good. Counted in memory and added here every few seconds.
CREATE TABLE usage_counters (
    workspace_id           uuid NOT NULL,
    interaction_key_id     uuid NOT NULL,
    hour                   timestamptz NOT NULL,
    interactions_accepted  bigint NOT NULL DEFAULT 0,
    interactions_rejected  bigint NOT NULL DEFAULT 0,
    deliveries_succeeded   bigint NOT NULL DEFAULT 0,
    deliveries_failed      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_id, interaction_key_id, hour)
);

-- Reports not yet acknowledged by a hub, written with the counters they carry. The id
-- travels with the report, so a hub applies a report sent twice once.
CREATE TABLE usage_reports (
    id          uuid PRIMARY KEY,
    counts      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
