-- Instances as they last reported themselves (operational data, not events).
CREATE TABLE instances (
    id                 text PRIMARY KEY,
    last_heartbeat_at  timestamptz NOT NULL,
    applied_position   bigint NOT NULL,
    workspace_count    bigint NOT NULL
);
