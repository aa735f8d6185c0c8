-- Resources of the Interactions API in the audit log: external keys and interaction keys
-- (in their workspace's stream) and technology partner apps (their own `app-<uuid>`
-- streams, of no organization: only the operator sees their rows).
ALTER TABLE audit_log DROP CONSTRAINT audit_log_resource_type_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_resource_type_check
    CHECK (resource_type IN ('organization', 'workspace', 'api_key', 'user', 'invitation', 'member',
                             'external_key', 'interaction_key', 'app'));
ALTER TABLE audit_log ALTER COLUMN organization_id DROP NOT NULL;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_organization_or_app
    CHECK (organization_id IS NOT NULL OR resource_type = 'app');
