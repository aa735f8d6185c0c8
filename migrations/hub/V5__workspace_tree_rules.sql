-- Tree rules checked at commit, inside the append transaction (appends are serialized by
-- the log-head lock, so the check cannot race): a live workspace's parent is live, and an
-- active workspace's parent is active. Deferred, so a cascade that changes a parent and
-- its children in one commit is judged on the final rows.

CREATE FUNCTION workspaces_check_tree() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_now workspaces%ROWTYPE;
    parent_status text;
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

CREATE CONSTRAINT TRIGGER workspaces_tree_rules
    AFTER INSERT OR UPDATE OF parent_id, status ON workspaces
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION workspaces_check_tree();
