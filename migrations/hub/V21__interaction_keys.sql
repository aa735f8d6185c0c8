-- Interactions API keys: the data keys of withheld secrets, the emails their creation
-- sends, and the organization's usage counter of interaction keys.

-- A key created for a source app has its secret sealed under a data key of its own (sealed
-- by the master key), kept here rather than in the log: the source app's claim, the key's
-- revocation or its workspace's deletion sets `sealed_data_key` to NULL in the same
-- transaction, after which no copy of the event (replays included) can be opened again.
-- Mutable, not derived from events: `hub projections rebuild` leaves it alone.
CREATE TABLE withheld_secret_keys (
    interaction_key_id uuid PRIMARY KEY,
    sealed_data_key bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz,
    CHECK ((sealed_data_key IS NULL) = (destroyed_at IS NOT NULL))
);

-- To the workspace's owners when a key is generated for a source app; to a destination
-- app's contact when a new key is routed to it.
ALTER TYPE email_kind ADD VALUE 'interaction_key_generated';
ALTER TYPE email_kind ADD VALUE 'interaction_key_routed';

-- A key counts while it is not revoked and its workspace is not deleted (a deleted
-- workspace's keys are dead without events of their own). Nothing created interaction keys
-- before this migration, so the counter starts from the rows as they are.
UPDATE organizations o SET used_interaction_keys = (
    SELECT count(*) FROM interaction_keys k JOIN workspaces w ON w.id = k.workspace_id
     WHERE k.organization_id = o.id AND k.revoked_at IS NULL AND w.status <> 'deleted'
);

CREATE FUNCTION organizations_count_interaction_keys() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta integer := 0;
    org uuid;
    workspace_deleted boolean;
BEGIN
    SELECT EXISTS (
        SELECT 1 FROM workspaces w
         WHERE w.id = (CASE WHEN TG_OP = 'DELETE' THEN OLD.workspace_id ELSE NEW.workspace_id END)
           AND w.status = 'deleted'
    ) INTO workspace_deleted;
    IF TG_OP <> 'DELETE' THEN
        delta := delta + (NEW.revoked_at IS NULL AND NOT workspace_deleted)::int;
        org := NEW.organization_id;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        delta := delta - (OLD.revoked_at IS NULL AND NOT workspace_deleted)::int;
        org := OLD.organization_id;
    END IF;
    IF delta <> 0 THEN
        UPDATE organizations SET used_interaction_keys = used_interaction_keys + delta WHERE id = org;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER interaction_keys_usage AFTER INSERT OR DELETE OR UPDATE OF revoked_at ON interaction_keys
    FOR EACH ROW EXECUTE FUNCTION organizations_count_interaction_keys();

-- A workspace deleted (or, were it ever undone, no longer deleted) takes its unrevoked keys
-- out of (or back into) the counter, and destroys the data keys of their unclaimed secrets.
CREATE FUNCTION workspaces_interaction_keys_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    keys integer;
BEGIN
    SELECT count(*) INTO keys FROM interaction_keys WHERE workspace_id = NEW.id AND revoked_at IS NULL;
    IF keys <> 0 THEN
        UPDATE organizations
           SET used_interaction_keys = used_interaction_keys + CASE WHEN NEW.status = 'deleted' THEN -keys ELSE keys END
         WHERE id = NEW.organization_id;
    END IF;
    IF NEW.status = 'deleted' THEN
        UPDATE withheld_secret_keys SET sealed_data_key = NULL, destroyed_at = now()
         WHERE sealed_data_key IS NOT NULL
           AND interaction_key_id IN (SELECT id FROM interaction_keys WHERE workspace_id = NEW.id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER workspaces_interaction_keys_usage AFTER UPDATE OF status ON workspaces
    FOR EACH ROW WHEN ((OLD.status = 'deleted') IS DISTINCT FROM (NEW.status = 'deleted'))
    EXECUTE FUNCTION workspaces_interaction_keys_deleted();

-- A revoked key's unclaimed secret can never be claimed: its data key goes with the
-- revocation, whatever revoked it (a delete, its app's deletion).
CREATE FUNCTION interaction_keys_destroy_withheld() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE withheld_secret_keys SET sealed_data_key = NULL, destroyed_at = now()
     WHERE interaction_key_id = NEW.id AND sealed_data_key IS NOT NULL;
    RETURN NULL;
END;
$$;

CREATE TRIGGER interaction_keys_revoked_withheld AFTER UPDATE OF revoked_at ON interaction_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION interaction_keys_destroy_withheld();
