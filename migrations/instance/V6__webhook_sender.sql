-- What the webhook sender records of a delivery beyond its status:
-- - `last_error`: why its last attempt did not succeed (a status code says too little when
--   the connection failed or the destination was refused);
-- - `claimed_until`: while a sender holds it (claimed, its request in flight), so a retry
--   asked for meanwhile does not send it twice at once;
-- - `round_started_at_attempt`: where the current round of the retry schedule began (a
--   retry asked for through the API starts the schedule afresh while `attempts` keeps
--   counting every attempt).
ALTER TABLE deliveries
    ADD COLUMN last_error text,
    ADD COLUMN claimed_until timestamptz,
    ADD COLUMN round_started_at_attempt integer NOT NULL DEFAULT 0,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- `GET /v1/runtime/deliveries`: a workspace's deliveries, optionally by status, in id
-- (creation) order.
CREATE INDEX deliveries_workspace ON deliveries (workspace_id, id);
CREATE INDEX deliveries_workspace_status ON deliveries (workspace_id, status, id);

-- The sender's next due delivery to one webhook URI (a request slot that frees up goes on
-- to the same URI).
CREATE INDEX deliveries_due_by_url ON deliveries (url, next_attempt_at) WHERE status = 'pending';
