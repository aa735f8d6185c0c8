-- No live interaction key is provisioned to or routed to a revoked app, checked at commit
-- inside the append transaction (appends are serialized by the log-head lock, so the check
-- cannot race): a key created for an app that was being deleted is refused, and an app
-- delete that missed a key created meanwhile is refused and planned again. Deferred, so a
-- delete that revokes the app and its keys in one commit is judged on the final rows. A
-- deleted workspace's keys are not judged (they ended with it), nor is a replay of history.
CREATE FUNCTION apps_check_keys_live() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('hub.replaying_history', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'apps' THEN
        IF EXISTS (
            SELECT 1 FROM interaction_keys k JOIN workspaces w ON w.id = k.workspace_id
             WHERE (k.source_app_id = NEW.id OR k.destination_app_id = NEW.id)
               AND k.revoked_at IS NULL AND w.status <> 'deleted'
        ) THEN
            RAISE EXCEPTION 'app % is revoked while an interaction key of it is live', NEW.id
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'apps_live';
        END IF;
    ELSIF EXISTS (
        SELECT 1 FROM interaction_keys k JOIN apps a ON a.id IN (k.source_app_id, k.destination_app_id)
         WHERE k.id = NEW.id AND k.revoked_at IS NULL AND a.revoked_at IS NOT NULL
    ) THEN
        RAISE EXCEPTION 'interaction key % would be live for a revoked app', NEW.id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'apps_live';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER apps_keys_live
    AFTER UPDATE OF revoked_at ON apps
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION apps_check_keys_live();

CREATE CONSTRAINT TRIGGER interaction_keys_app_live
    AFTER INSERT ON interaction_keys
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.revoked_at IS NULL)
    EXECUTE FUNCTION apps_check_keys_live();
