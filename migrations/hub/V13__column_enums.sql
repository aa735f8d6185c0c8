-- Statuses, roles and kinds stored in read-model columns become enum types, so a value
-- outside the set is refused by the column itself and the hub maps each to a Rust enum
-- (`hub::columns`) instead of comparing strings.
--
-- Comparisons with literals (`status <> 'deleted'`) keep working: the literal takes the
-- enum type. A `text` value compared with one of these columns does not, so readers cast
-- (`status::text`) where they mix a column with text. Triggers whose `WHEN` or
-- `UPDATE OF` names a converted column hold a dependency on it that `ALTER COLUMN TYPE`
-- refuses: they are dropped here and created again unchanged. So are the partial indexes,
-- whose stored predicates compare the column with `text`. The CHECK constraints that
-- listed the values are replaced by the types.

CREATE TYPE organization_status AS ENUM ('active', 'deleted');
CREATE TYPE workspace_status AS ENUM ('active', 'archived', 'deleted');
CREATE TYPE user_status AS ENUM ('active', 'disabled', 'deleted');
CREATE TYPE invitation_status AS ENUM ('pending', 'accepted', 'declined', 'revoked');
CREATE TYPE member_role AS ENUM ('owner', 'admin', 'member', 'viewer');
CREATE TYPE actor_type AS ENUM ('operator', 'api_key', 'user', 'app', 'system');
CREATE TYPE outbox_status AS ENUM ('pending', 'sending', 'sent', 'failed', 'unknown');
CREATE TYPE email_kind AS ENUM ('invitation');

DROP TRIGGER workspaces_tree_rules ON workspaces;
DROP TRIGGER workspaces_usage ON workspaces;
DROP TRIGGER workspaces_organization_live ON workspaces;
DROP TRIGGER workspaces_depth ON workspaces;
DROP TRIGGER workspaces_keys_live ON workspaces;
DROP TRIGGER users_api_keys_usage ON users;
DROP TRIGGER invitations_usage ON invitations;
DROP TRIGGER organizations_members_live ON organizations;

DROP INDEX workspaces_sibling_name;
DROP INDEX users_email;
DROP INDEX invitations_pending;
DROP INDEX outbox_due;

ALTER TABLE organizations DROP CONSTRAINT organizations_status_check,
    ALTER COLUMN status TYPE organization_status USING status::organization_status;
ALTER TABLE workspaces DROP CONSTRAINT workspaces_status_check,
    ALTER COLUMN status TYPE workspace_status USING status::workspace_status;
ALTER TABLE users DROP CONSTRAINT users_status_check,
    ALTER COLUMN status TYPE user_status USING status::user_status;
ALTER TABLE invitations DROP CONSTRAINT invitations_status_check,
    ALTER COLUMN status TYPE invitation_status USING status::invitation_status,
    ALTER COLUMN role TYPE member_role USING role::member_role;
ALTER TABLE members ALTER COLUMN role TYPE member_role USING role::member_role;
ALTER TABLE api_keys ALTER COLUMN created_by_type TYPE actor_type USING created_by_type::actor_type;
ALTER TABLE outbox DROP CONSTRAINT outbox_status_check,
    ALTER COLUMN status DROP DEFAULT,
    ALTER COLUMN status TYPE outbox_status USING status::outbox_status,
    ALTER COLUMN status SET DEFAULT 'pending',
    ALTER COLUMN kind TYPE email_kind USING kind::email_kind;

-- The indexes dropped above, as V2, V3 and V10 made them.
CREATE UNIQUE INDEX workspaces_sibling_name ON workspaces
    (organization_id, COALESCE(parent_id, '00000000-0000-0000-0000-000000000000'::uuid), lower(name))
    WHERE status <> 'deleted';
CREATE UNIQUE INDEX users_email ON users (organization_id, lower(email)) WHERE status <> 'deleted';
CREATE INDEX invitations_pending ON invitations (workspace_id, expires_at) WHERE status = 'pending';
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE status = 'pending';

-- The triggers dropped above, as V5, V8, V9, V10 and V12 made them.
CREATE CONSTRAINT TRIGGER workspaces_tree_rules
    AFTER INSERT OR UPDATE OF parent_id, status ON workspaces
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION workspaces_check_tree();

CREATE TRIGGER workspaces_usage AFTER INSERT OR DELETE OR UPDATE OF status ON workspaces
    FOR EACH ROW EXECUTE FUNCTION organizations_count_workspaces();

CREATE CONSTRAINT TRIGGER workspaces_organization_live
    AFTER INSERT OR UPDATE OF status, organization_id ON workspaces
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.status <> 'deleted')
    EXECUTE FUNCTION organizations_check_live();

CREATE CONSTRAINT TRIGGER workspaces_depth
    AFTER INSERT OR UPDATE OF ancestors ON workspaces
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (cardinality(NEW.ancestors) > 32 AND NEW.status <> 'deleted')
    EXECUTE FUNCTION workspaces_check_depth();

CREATE CONSTRAINT TRIGGER workspaces_keys_live
    AFTER UPDATE OF status ON workspaces
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.status = 'deleted')
    EXECUTE FUNCTION api_keys_check_workspaces();

CREATE TRIGGER users_api_keys_usage AFTER UPDATE OF status ON users
    FOR EACH ROW WHEN ((OLD.status = 'deleted') IS DISTINCT FROM (NEW.status = 'deleted'))
    EXECUTE FUNCTION organizations_count_owned_api_keys();

CREATE TRIGGER invitations_usage AFTER INSERT OR DELETE OR UPDATE OF status ON invitations
    FOR EACH ROW EXECUTE FUNCTION organizations_count_invitations();

CREATE CONSTRAINT TRIGGER organizations_members_live
    AFTER UPDATE OF status ON organizations
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.status <> 'active')
    EXECUTE FUNCTION organizations_check_live();

-- The parent's status is read into a variable of the column's type.
CREATE OR REPLACE FUNCTION workspaces_check_tree() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_now workspaces%ROWTYPE;
    parent_status workspace_status;
BEGIN
    SELECT * INTO row_now FROM workspaces WHERE id = NEW.id;
    -- The row as committed; a deleted workspace constrains nothing below.
    IF row_now.status <> 'deleted' AND row_now.parent_id IS NOT NULL THEN
        SELECT status INTO parent_status FROM workspaces WHERE id = row_now.parent_id;
        IF parent_status IS NULL OR parent_status = 'deleted' THEN
            RAISE EXCEPTION 'workspace % would live under a deleted parent', row_now.id
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'workspaces_parent_live';
        END IF;
        IF row_now.status = 'active' AND parent_status = 'archived' THEN
            RAISE EXCEPTION 'workspace % would be active under an archived parent', row_now.id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'workspaces_parent_active';
        END IF;
    END IF;
    -- A parent leaving the live or active state must not leave children behind.
    IF row_now.status = 'deleted' AND EXISTS (
        SELECT 1 FROM workspaces WHERE parent_id = row_now.id AND status <> 'deleted'
    ) THEN
        RAISE EXCEPTION 'workspace % still has live children', row_now.id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'workspaces_parent_live';
    END IF;
    IF row_now.status = 'archived' AND EXISTS (
        SELECT 1 FROM workspaces WHERE parent_id = row_now.id AND status = 'active'
    ) THEN
        RAISE EXCEPTION 'workspace % still has active children', row_now.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'workspaces_parent_active';
    END IF;
    RETURN NULL;
END;
$$;
