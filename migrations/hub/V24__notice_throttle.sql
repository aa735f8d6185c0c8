-- Emails an organization makes the platform send to someone outside it (a destination
-- app's contact, told of each key routed to the app) are capped per organization,
-- recipient and hour; the cap is counted on these columns.
ALTER TABLE outbox ADD COLUMN organization_id uuid;
CREATE INDEX outbox_notices ON outbox (kind, recipient, organization_id, created_at)
    WHERE organization_id IS NOT NULL;
