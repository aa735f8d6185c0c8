-- A live interaction key of a live workspace names only live partner apps, checked at
-- commit inside the append transaction (appends are serialized by the log-head lock, so the
-- check cannot race): a create that found its app live before the app's deletion committed
-- is refused, and an app deletion that missed a key created meanwhile is refused and
-- planned again (it revokes the keys it finds in the same commit). Deferred, so that
-- commit is judged on its final rows. A replay of history (`hub projections rebuild`) is
-- not judged again.
CREATE FUNCTION apps_check_live() RETURNS trigger LANGUAGE plpgsql AS $$
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
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'apps_keys_revoked';
        END IF;
    ELSIF EXISTS (
        SELECT 1 FROM apps a
         WHERE a.id IN (NEW.source_app_id, NEW.destination_app_id) AND a.revoked_at IS NOT NULL
    ) THEN
        RAISE EXCEPTION 'interaction key % would be live with a revoked app', NEW.id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'interaction_keys_apps_live';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER apps_keys_revoked
    AFTER UPDATE OF revoked_at ON apps
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION apps_check_live();

CREATE CONSTRAINT TRIGGER interaction_keys_apps_live
    AFTER INSERT ON interaction_keys
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.revoked_at IS NULL AND (NEW.source_app_id IS NOT NULL OR NEW.destination_app_id IS NOT NULL))
    EXECUTE FUNCTION apps_check_live();
