-- A live admin key is restricted only to live workspaces, checked at commit inside the
-- append transaction (appends are serialized by the log-head lock, so the check cannot
-- race): a key created while one of its workspaces is being deleted, or a delete that
-- missed a key created meanwhile, is refused and decided again. Deferred, so a delete that
-- revokes or narrows the keys in the same commit is judged on the final rows. A replay of
-- history (`hub projections rebuild`) is not judged again: logs written before this rule
-- may hold such keys.

CREATE INDEX api_keys_workspace_ids ON api_keys USING gin (workspace_ids);

CREATE FUNCTION api_keys_check_workspaces() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('hub.replaying_history', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'api_keys' THEN
        IF EXISTS (
            SELECT 1 FROM api_keys k JOIN workspaces w ON w.id = ANY (k.workspace_ids)
            WHERE k.id = NEW.id AND k.revoked_at IS NULL AND w.status = 'deleted'
        ) THEN
            RAISE EXCEPTION 'api key % would be restricted to a deleted workspace', NEW.id
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'api_keys_workspaces_live';
        END IF;
    ELSIF EXISTS (SELECT 1 FROM workspaces WHERE id = NEW.id AND status = 'deleted')
        AND EXISTS (
            SELECT 1 FROM api_keys WHERE workspace_ids @> ARRAY[NEW.id] AND revoked_at IS NULL
        ) THEN
        RAISE EXCEPTION 'workspace % is deleted while a live key is restricted to it', NEW.id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'api_keys_workspaces_live';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER api_keys_workspaces_live
    AFTER INSERT OR UPDATE OF workspace_ids, revoked_at ON api_keys
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION api_keys_check_workspaces();

CREATE CONSTRAINT TRIGGER workspaces_keys_live
    AFTER UPDATE OF status ON workspaces
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.status = 'deleted')
    EXECUTE FUNCTION api_keys_check_workspaces();
