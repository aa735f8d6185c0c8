-- A live workspace or an unrevoked admin key belongs to an active organization, checked at
-- commit inside the append transaction (appends are serialized by the log-head lock, so
-- the check cannot race): a create that passed its check of the organization while the
-- organization was being deleted is refused, and a delete that missed a workspace or key
-- created meanwhile is refused and planned again. Deferred, so a delete that deletes the
-- workspaces and revokes the keys in the same commit is judged on the final rows. A replay
-- of history (`hub projections rebuild`) is not judged again: logs written before this
-- rule may hold such rows.
--
-- While an organization is being deleted, the hub holds the advisory lock
-- (1212, hashtext(id)) on a session of its own; a workspace or key of the organization
-- that would be live at commit is then refused at once, so creates cannot outrun the
-- delete again and again. Only tried, never waited for: the create holds the log-head
-- lock the delete's commit needs.

CREATE FUNCTION organizations_check_live() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('hub.replaying_history', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'organizations' THEN
        IF EXISTS (SELECT 1 FROM workspaces WHERE organization_id = NEW.id AND status <> 'deleted')
           OR EXISTS (SELECT 1 FROM api_keys WHERE organization_id = NEW.id AND revoked_at IS NULL) THEN
            RAISE EXCEPTION 'organization % is deleted while a workspace or key of it is live', NEW.id
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'organizations_live';
        END IF;
    ELSIF NOT pg_try_advisory_xact_lock_shared(1212, hashtext(NEW.organization_id::text)) THEN
        RAISE EXCEPTION 'organization % is being deleted', NEW.organization_id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'organizations_live';
    ELSIF TG_TABLE_NAME = 'workspaces' THEN
        IF EXISTS (
            SELECT 1 FROM workspaces w JOIN organizations o ON o.id = w.organization_id
             WHERE w.id = NEW.id AND w.status <> 'deleted' AND o.status <> 'active'
        ) THEN
            RAISE EXCEPTION 'workspace % would be live in a deleted organization', NEW.id
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'organizations_live';
        END IF;
    ELSIF EXISTS (
        SELECT 1 FROM api_keys k JOIN organizations o ON o.id = k.organization_id
         WHERE k.id = NEW.id AND k.revoked_at IS NULL AND o.status <> 'active'
    ) THEN
        RAISE EXCEPTION 'api key % would be live in a deleted organization', NEW.id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'organizations_live';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER workspaces_organization_live
    AFTER INSERT OR UPDATE OF status, organization_id ON workspaces
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.status <> 'deleted')
    EXECUTE FUNCTION organizations_check_live();

CREATE CONSTRAINT TRIGGER api_keys_organization_live
    AFTER INSERT OR UPDATE OF revoked_at, organization_id ON api_keys
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.revoked_at IS NULL)
    EXECUTE FUNCTION organizations_check_live();

CREATE CONSTRAINT TRIGGER organizations_members_live
    AFTER UPDATE OF status ON organizations
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.status <> 'active')
    EXECUTE FUNCTION organizations_check_live();
