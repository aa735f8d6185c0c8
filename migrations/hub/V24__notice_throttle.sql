-- Emails an organization makes the platform send to someone outside it (a destination
-- app's contact, told of each key routed to the app) are capped per organization,
-- recipient and hour; the cap is counted on these columns.
ALTER TABLE outbox ADD COLUMN organization_id uuid;
CREATE INDEX outbox_notices ON outbox (kind, recipient, organization_id, created_at)
    WHERE organization_id IS NOT NULL;

-- Invitations carry a link the invitee needs, so they are refused rather than dropped:
-- the commit inviting one address for the twenty-first time in an hour fails (appends are
-- serialized, so the count is exact).
CREATE FUNCTION outbox_check_invitations_per_recipient() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM outbox
        WHERE kind = NEW.kind AND recipient = NEW.recipient AND organization_id = NEW.organization_id
          AND created_at > now() - interval '1 hour') >= 20 THEN
        RAISE EXCEPTION 'organization % has invited this address 20 times in the past hour', NEW.organization_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'outbox_invitations_per_recipient';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER outbox_invitations_per_recipient BEFORE INSERT ON outbox
    FOR EACH ROW WHEN (NEW.kind = 'invitation' AND NEW.organization_id IS NOT NULL)
    EXECUTE FUNCTION outbox_check_invitations_per_recipient();
