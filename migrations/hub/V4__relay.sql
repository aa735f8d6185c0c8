-- How far the relay has published the log to NATS JetStream (written after the acks).
CREATE TABLE relay_checkpoint (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO relay_checkpoint (position) VALUES (0);
