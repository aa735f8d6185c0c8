-- What `POST /v1/interactions` writes for each delivery it creates, cut to what is read:
-- every accepted interaction inserts one `deliveries` row per webhook URI, and each of its
-- indexes and checks is paid on that path.
-- - The foreign key to `interactions` ran a look-up and a row lock on the interaction for
--   each delivery inserted; ingest inserts both in one statement, and deleting a workspace
--   deletes its deliveries with its interactions (both by workspace), so it guarded nothing
--   the writers do not already ensure.
-- - `deliveries_interaction` served that key's cascade only; `deliveries_due` no query
--   (the webhook sender finds due deliveries URI by URI, through `deliveries_due_by_url`).
ALTER TABLE deliveries DROP CONSTRAINT deliveries_interaction_id_fkey;
DROP INDEX deliveries_interaction;
DROP INDEX deliveries_due;
