-- Aggregates' states at a version, so loading a cold, long stream reads only the events
-- after it. Derived from the log alone: any row may be deleted at any time (the hub then
-- reads the stream from its start), and `hub projections rebuild` empties the table.
CREATE TABLE aggregate_snapshots (
    stream_id text PRIMARY KEY,
    version bigint NOT NULL CHECK (version > 0),
    -- The shape of `state`; a hub ignores a snapshot of another shape.
    state_version int NOT NULL,
    state jsonb NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
);
