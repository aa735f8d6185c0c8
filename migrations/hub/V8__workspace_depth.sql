-- A workspace tree is at most 32 levels deep (a root is level 1; `ancestors` holds the
-- path from the root down to the row itself, so its length is the level). Checked at
-- commit inside the append transaction, like the rules of V5: appends are serialized by
-- the log-head lock, so two concurrent moves are judged one after the other on the rows
-- as committed, and a move that pushes any node of its subtree too deep is refused
-- (`workspaces_move` rewrites the path of every node below the moved one).
--
-- The trigger fires only for rows whose path changed (insert, move) and is already too
-- long, so archiving, restoring or deleting large subtrees costs it nothing. Trees that
-- were deeper before the rule keep working: only creating or moving into a too-deep
-- place is refused. `hub projections rebuild` replays history as it happened and sets
-- `hub.replaying_history` to skip the check.

CREATE FUNCTION workspaces_check_depth() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('hub.replaying_history', true) = 'on' THEN
        RETURN NULL;
    END IF;
    -- The row as committed: a later statement of the transaction may have changed it.
    IF EXISTS (
        SELECT 1 FROM workspaces
         WHERE id = NEW.id AND status <> 'deleted' AND cardinality(ancestors) > 32
    ) THEN
        RAISE EXCEPTION 'workspace % would be deeper than 32 levels', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'workspaces_depth';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER workspaces_depth
    AFTER INSERT OR UPDATE OF ancestors ON workspaces
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (cardinality(NEW.ancestors) > 32 AND NEW.status <> 'deleted')
    EXECUTE FUNCTION workspaces_check_depth();
