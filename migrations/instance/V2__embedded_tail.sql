-- For an instance embedded in a single-node hub: how far it has read the hub's log
-- directly (it has no JetStream consumer to remember that).
ALTER TABLE instance_state ADD COLUMN tail_position bigint NOT NULL DEFAULT 0;
