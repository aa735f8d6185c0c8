-- Operator-set limits of an organization, and the usage its quotas are held to.
--
-- The quotas and the ceiling are projected from `OrganizationLimitsChanged`. The usage
-- counters are kept by triggers on the read-model rows they count, so every projection
-- statement that creates, deletes, revokes or answers something moves them, in the append
-- transaction; `hub projections rebuild` recreates them by replaying into those rows.
-- A create that would take a counter past its quota is refused by the constraint trigger
-- below, inside the append transaction: appends are serialized by the log-head lock, so
-- concurrent creates cannot both see a free slot.

ALTER TABLE organizations
    -- NULL: the server default (`HUB_RATE_LIMIT_PER_MINUTE`).
    ADD COLUMN rate_limit_ceiling_per_minute integer,
    -- The defaults of `Quotas::default()`, for organizations created before quotas.
    ADD COLUMN quota_workspaces integer NOT NULL DEFAULT 10000,
    ADD COLUMN quota_api_keys integer NOT NULL DEFAULT 1000,
    ADD COLUMN quota_interaction_keys integer NOT NULL DEFAULT 100000,
    ADD COLUMN quota_pending_invitations integer NOT NULL DEFAULT 1000,
    -- Workspaces not deleted (archived ones count).
    ADD COLUMN used_workspaces integer NOT NULL DEFAULT 0,
    -- Admin keys not revoked, expired ones included: an expired key still exists until it
    -- is revoked (else keys made short-lived one after another would get around the
    -- quota). Keys revoked by their user's deletion do not count.
    ADD COLUMN used_api_keys integer NOT NULL DEFAULT 0,
    -- Nothing creates interaction keys yet.
    ADD COLUMN used_interaction_keys integer NOT NULL DEFAULT 0,
    -- Invitations with status `pending`, including those past `expires_at` (see above).
    ADD COLUMN used_pending_invitations integer NOT NULL DEFAULT 0;

UPDATE organizations o SET
    used_workspaces = (SELECT count(*) FROM workspaces w WHERE w.organization_id = o.id AND w.status <> 'deleted'),
    used_api_keys = (
        SELECT count(*) FROM api_keys k
         WHERE k.organization_id = o.id AND k.revoked_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = k.owner_user_id AND u.status = 'deleted')
    ),
    used_pending_invitations = (
        SELECT count(*) FROM invitations i JOIN workspaces w ON w.id = i.workspace_id
         WHERE w.organization_id = o.id AND i.status = 'pending'
    );

-- The exact count of live invitations below reads only pending ones not yet expired
-- (a range of this index per workspace), though pending rows may pile up long after they
-- expired.
CREATE INDEX invitations_pending ON invitations (workspace_id, expires_at) WHERE status = 'pending';

-- A user's deletion takes their keys out of the key counter.
CREATE INDEX api_keys_owner ON api_keys (owner_user_id) WHERE owner_user_id IS NOT NULL;

CREATE FUNCTION organizations_count_workspaces() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta integer := 0;
    org uuid;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        delta := delta + (NEW.status <> 'deleted')::int;
        org := NEW.organization_id;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        delta := delta - (OLD.status <> 'deleted')::int;
        org := OLD.organization_id;
    END IF;
    IF delta <> 0 THEN
        UPDATE organizations SET used_workspaces = used_workspaces + delta WHERE id = org;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER workspaces_usage AFTER INSERT OR DELETE OR UPDATE OF status ON workspaces
    FOR EACH ROW EXECUTE FUNCTION organizations_count_workspaces();

-- A key counts while it is not revoked and its user (if any) is not deleted; the owner
-- never changes, so OLD and NEW are judged against the same user.
CREATE FUNCTION organizations_count_api_keys() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta integer := 0;
    org uuid;
    owner_deleted boolean;
BEGIN
    SELECT EXISTS (
        SELECT 1 FROM users u
         WHERE u.id = (CASE WHEN TG_OP = 'DELETE' THEN OLD.owner_user_id ELSE NEW.owner_user_id END)
           AND u.status = 'deleted'
    ) INTO owner_deleted;
    IF TG_OP <> 'DELETE' THEN
        delta := delta + (NEW.revoked_at IS NULL AND NOT owner_deleted)::int;
        org := NEW.organization_id;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        delta := delta - (OLD.revoked_at IS NULL AND NOT owner_deleted)::int;
        org := OLD.organization_id;
    END IF;
    IF delta <> 0 THEN
        UPDATE organizations SET used_api_keys = used_api_keys + delta WHERE id = org;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_usage AFTER INSERT OR DELETE OR UPDATE OF revoked_at ON api_keys
    FOR EACH ROW EXECUTE FUNCTION organizations_count_api_keys();

-- A user deleted (or, were it ever undone, no longer deleted) takes their unrevoked keys
-- out of (or back into) the counter.
CREATE FUNCTION organizations_count_owned_api_keys() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    keys integer;
BEGIN
    SELECT count(*) INTO keys FROM api_keys WHERE owner_user_id = NEW.id AND revoked_at IS NULL;
    IF keys <> 0 THEN
        UPDATE organizations
           SET used_api_keys = used_api_keys + CASE WHEN NEW.status = 'deleted' THEN -keys ELSE keys END
         WHERE id = NEW.organization_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_api_keys_usage AFTER UPDATE OF status ON users
    FOR EACH ROW WHEN ((OLD.status = 'deleted') IS DISTINCT FROM (NEW.status = 'deleted'))
    EXECUTE FUNCTION organizations_count_owned_api_keys();

CREATE FUNCTION organizations_count_invitations() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta integer := 0;
    ws uuid;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        delta := delta + (NEW.status = 'pending')::int;
        ws := NEW.workspace_id;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        delta := delta - (OLD.status = 'pending')::int;
        ws := OLD.workspace_id;
    END IF;
    IF delta <> 0 THEN
        UPDATE organizations SET used_pending_invitations = used_pending_invitations + delta
         WHERE id = (SELECT organization_id FROM workspaces WHERE id = ws);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER invitations_usage AFTER INSERT OR DELETE OR UPDATE OF status ON invitations
    FOR EACH ROW EXECUTE FUNCTION organizations_count_invitations();

-- Refuses growth past a quota. Only growth: an operator may lower a quota below the
-- usage, which blocks new creates and nothing else. The key counter is exact (expired
-- keys count until revoked). The invitation counter may hold expired invitations, so past
-- the quota it is checked against a count of the live ones before refusing: a range of
-- `invitations_pending` (pending, not expired) per workspace of the organization, stopped
-- once past the quota, so the work is bounded by the organization's workspaces and its
-- quota, however many expired invitations pile up. `hub projections rebuild` sets `hub.replaying_history`: the log
-- is history, already admitted, and is replayed whatever the quotas say today.
CREATE FUNCTION organizations_check_quotas() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('hub.replaying_history', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF NEW.used_workspaces > OLD.used_workspaces AND NEW.used_workspaces > NEW.quota_workspaces THEN
        RAISE EXCEPTION 'organization % is at its quota of % workspaces', NEW.id, NEW.quota_workspaces
            USING ERRCODE = 'check_violation', CONSTRAINT = 'organizations_quota_workspaces';
    END IF;
    IF NEW.used_api_keys > OLD.used_api_keys AND NEW.used_api_keys > NEW.quota_api_keys THEN
        RAISE EXCEPTION 'organization % is at its quota of % API keys', NEW.id, NEW.quota_api_keys
            USING ERRCODE = 'check_violation', CONSTRAINT = 'organizations_quota_api_keys';
    END IF;
    IF NEW.used_interaction_keys > OLD.used_interaction_keys
       AND NEW.used_interaction_keys > NEW.quota_interaction_keys THEN
        RAISE EXCEPTION 'organization % is at its quota of % interaction keys', NEW.id, NEW.quota_interaction_keys
            USING ERRCODE = 'check_violation', CONSTRAINT = 'organizations_quota_interaction_keys';
    END IF;
    IF NEW.used_pending_invitations > OLD.used_pending_invitations
       AND NEW.used_pending_invitations > NEW.quota_pending_invitations AND (
        SELECT count(*) FROM (
            SELECT 1 FROM workspaces w JOIN invitations i ON i.workspace_id = w.id
             WHERE w.organization_id = NEW.id AND w.status <> 'deleted'
               AND i.status = 'pending' AND i.expires_at > now()
             LIMIT NEW.quota_pending_invitations + 1
        ) live
    ) > NEW.quota_pending_invitations THEN
        RAISE EXCEPTION 'organization % is at its quota of % pending invitations', NEW.id, NEW.quota_pending_invitations
            USING ERRCODE = 'check_violation', CONSTRAINT = 'organizations_quota_pending_invitations';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER organizations_quotas
    AFTER UPDATE OF used_workspaces, used_api_keys, used_interaction_keys, used_pending_invitations
    ON organizations FOR EACH ROW
    WHEN (NEW.used_workspaces > NEW.quota_workspaces
          OR NEW.used_api_keys > NEW.quota_api_keys
          OR NEW.used_interaction_keys > NEW.quota_interaction_keys
          OR NEW.used_pending_invitations > NEW.quota_pending_invitations)
    EXECUTE FUNCTION organizations_check_quotas();
