-- An app's version is its stream's version, a bigint like every other read model's
-- (`integer` refused the writer's value, so no app could be registered).
ALTER TABLE apps ALTER COLUMN version TYPE bigint;
