-- The append-only, hash-chained event log.
--
-- `position` is allocated by the appending transaction while it holds the lock on the
-- single `event_log_head` row until commit, so positions are dense and in commit order:
-- a reader polling `position > last` can never skip an event committed later with a
-- smaller position.

CREATE TABLE events (
    position        bigint      PRIMARY KEY CHECK (position > 0),
    stream_id       text        NOT NULL CHECK (length(stream_id) BETWEEN 1 AND 200),
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL CHECK (length(event_type) BETWEEN 1 AND 200),
    schema_version  integer     NOT NULL CHECK (schema_version > 0),
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    prev_hash       bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash            bytea       NOT NULL CHECK (length(hash) = 32),
    UNIQUE (stream_id, stream_version)
);

-- The head of the log: the last position and its hash. Locking this row serializes
-- appends across every hub process; the writer batches commands to amortize it.
CREATE TABLE event_log_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position   bigint  NOT NULL,
    hash       bytea   NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO event_log_head (position, hash) VALUES (0, decode(repeat('00', 32), 'hex'));

CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- `session_replication_role = replica` (superuser only) would skip ordinary triggers.
ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_update_or_delete;
ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_truncate;

REVOKE UPDATE, DELETE, TRUNCATE ON events FROM PUBLIC;
