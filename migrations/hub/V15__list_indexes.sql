-- Lists that stay fast at a million rows: an index for every sort and filter the lists
-- offer, and exact counts of the common filters kept in the read models.
--
-- Every list orders by one sort expression and the row's id, and walks on by keyset
-- (`(sort, id) > (last sort, last id)`, see hub/src/http/cursor.rs): each index below ends
-- with that pair, after the equality columns of the filter it serves, so a page of any
-- depth is a range read of one index. Live rows only where the lists only show live rows.
--
-- Substring filters (`name=`, `email=`: `ILIKE '%text%'`) use trigram indexes. `pg_trgm`
-- ships with PostgreSQL (contrib) and is a trusted extension (PostgreSQL 13+): the role
-- that migrates needs only CREATE on the database, which its owner has, not superuser.
-- The serving role only uses its operators, which are granted to everyone.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Workspaces: by organization (keys), across organizations (the operator), by status,
-- parent and instance; each in both sorts where the filter leaves many rows.
CREATE INDEX workspaces_by_name ON workspaces (organization_id, lower(name), id) WHERE status <> 'deleted';
CREATE INDEX workspaces_all_created ON workspaces (created_at, id) WHERE status <> 'deleted';
CREATE INDEX workspaces_all_name ON workspaces (lower(name), id) WHERE status <> 'deleted';
CREATE INDEX workspaces_status_created ON workspaces (organization_id, status, created_at, id);
CREATE INDEX workspaces_status_name ON workspaces (organization_id, status, lower(name), id);
DROP INDEX workspaces_parent;
CREATE INDEX workspaces_parent_created ON workspaces (parent_id, created_at, id);
CREATE INDEX workspaces_parent_name ON workspaces (parent_id, lower(name), id) WHERE status <> 'deleted';
CREATE INDEX workspaces_instance_created ON workspaces (instance_id, created_at, id) WHERE status <> 'deleted';
CREATE INDEX workspaces_instance_name ON workspaces (instance_id, lower(name), id) WHERE status <> 'deleted';
CREATE INDEX workspaces_name_trgm ON workspaces USING gin (name gin_trgm_ops);

-- Admin keys (`status` is derived from times and owners: it filters the rows of a range).
CREATE INDEX api_keys_by_name ON api_keys (organization_id, lower(name), id);
CREATE INDEX api_keys_all_created ON api_keys (created_at, id);
CREATE INDEX api_keys_all_name ON api_keys (lower(name), id);
CREATE INDEX api_keys_name_trgm ON api_keys USING gin (name gin_trgm_ops);
-- What each derived status implies of the stored columns (`api_keys_owner`, V10, finds
-- the keys bound to a user).
CREATE INDEX api_keys_unrevoked ON api_keys (organization_id, created_at, id) WHERE revoked_at IS NULL;
CREATE INDEX api_keys_all_unrevoked ON api_keys (created_at, id) WHERE revoked_at IS NULL;
CREATE INDEX api_keys_revoked ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX api_keys_expiring ON api_keys (expires_at) WHERE revoked_at IS NULL;

-- Users.
CREATE INDEX users_by_name ON users (organization_id, lower(name), id) WHERE status <> 'deleted';
CREATE INDEX users_by_email ON users (organization_id, lower(email), id) WHERE status <> 'deleted';
CREATE INDEX users_status_created ON users (organization_id, status, created_at, id);
CREATE INDEX users_all_created ON users (created_at, id) WHERE status <> 'deleted';
CREATE INDEX users_all_name ON users (lower(name), id) WHERE status <> 'deleted';
CREATE INDEX users_all_email ON users (lower(email), id) WHERE status <> 'deleted';
CREATE INDEX users_email_trgm ON users USING gin (email gin_trgm_ops);

-- Members of a workspace, in the order they joined.
CREATE INDEX members_joined ON members (workspace_id, joined_at, user_id);

-- Organizations (the operator's list).
CREATE INDEX organizations_by_name ON organizations (status, lower(name), id);
CREATE INDEX organizations_name_trgm ON organizations USING gin (name gin_trgm_ops);

-- Exact workspace counts without a scan: `used_workspaces` (V10) counts the live ones,
-- `archived_workspaces` those archived; active = used - archived. Kept by a trigger on the
-- rows they count, like V10's counters, so every projection statement that creates,
-- archives, restores or deletes a workspace moves them in the append transaction, and
-- `hub projections rebuild` recreates them by replaying into those rows.
ALTER TABLE organizations ADD COLUMN archived_workspaces integer NOT NULL DEFAULT 0;

UPDATE organizations o SET archived_workspaces =
    (SELECT count(*) FROM workspaces w WHERE w.organization_id = o.id AND w.status = 'archived');

CREATE FUNCTION organizations_count_archived_workspaces() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta integer := 0;
    org uuid;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        delta := delta + (NEW.status = 'archived')::int;
        org := NEW.organization_id;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        delta := delta - (OLD.status = 'archived')::int;
        org := OLD.organization_id;
    END IF;
    IF delta <> 0 THEN
        UPDATE organizations SET archived_workspaces = archived_workspaces + delta WHERE id = org;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER workspaces_archived_count AFTER INSERT OR DELETE OR UPDATE OF status ON workspaces
    FOR EACH ROW EXECUTE FUNCTION organizations_count_archived_workspaces();

-- Exact user counts the same way: `live_users` (not deleted) and `disabled_users`.
ALTER TABLE organizations
    ADD COLUMN live_users integer NOT NULL DEFAULT 0,
    ADD COLUMN disabled_users integer NOT NULL DEFAULT 0;

UPDATE organizations o SET
    live_users = (SELECT count(*) FROM users u WHERE u.organization_id = o.id AND u.status <> 'deleted'),
    disabled_users = (SELECT count(*) FROM users u WHERE u.organization_id = o.id AND u.status = 'disabled');

CREATE FUNCTION organizations_count_users() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    live integer := 0;
    disabled integer := 0;
    org uuid;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        live := live + (NEW.status <> 'deleted')::int;
        disabled := disabled + (NEW.status = 'disabled')::int;
        org := NEW.organization_id;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        live := live - (OLD.status <> 'deleted')::int;
        disabled := disabled - (OLD.status = 'disabled')::int;
        org := OLD.organization_id;
    END IF;
    IF live <> 0 OR disabled <> 0 THEN
        UPDATE organizations
           SET live_users = live_users + live, disabled_users = disabled_users + disabled
         WHERE id = org;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_count AFTER INSERT OR DELETE OR UPDATE OF status ON users
    FOR EACH ROW EXECUTE FUNCTION organizations_count_users();
