-- Users, invitations and memberships (read models), and the email outbox.

CREATE TABLE users (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL,
    email           text NOT NULL,
    name            text NOT NULL,
    status          text NOT NULL CHECK (status IN ('active', 'disabled', 'deleted')),
    version         bigint NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
-- One live user per email and organization; enforced in the append transaction.
CREATE UNIQUE INDEX users_email ON users (organization_id, lower(email)) WHERE status <> 'deleted';
CREATE INDEX users_listing ON users (organization_id, created_at, id);

CREATE TABLE invitations (
    id              uuid PRIMARY KEY,
    workspace_id    uuid NOT NULL,
    email           text NOT NULL,
    role            text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'accepted', 'declined', 'revoked')),
    token_hash      bytea NOT NULL UNIQUE,
    expires_at      timestamptz NOT NULL,
    user_id         uuid,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX invitations_workspace ON invitations (workspace_id, created_at, id);
CREATE INDEX invitations_email ON invitations (lower(email));

CREATE TABLE members (
    workspace_id uuid NOT NULL,
    user_id      uuid NOT NULL,
    role         text NOT NULL,
    joined_at    timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX members_user ON members (user_id);

-- Emails to send, written in the transaction of the event that causes them. A row is
-- claimed (`sending`) before the SMTP exchange and marked `sent` after it, so a crash
-- never sends it twice; a row left `sending` by a crash becomes `unknown` for an
-- operator to check; a server's permanent refusal makes it `failed`. Bodies are cleared
-- once sent: they may carry one-time links.
CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    kind             text NOT NULL,
    recipient        text NOT NULL,
    subject          text NOT NULL,
    text_body        text,
    html_body        text,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'unknown')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    claimed_at       timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE status = 'pending';

-- Set in the transaction that commits a command's events, so a retry after a crash that
-- lost the stored response never runs the command a second time.
ALTER TABLE idempotency_keys ADD COLUMN committed boolean NOT NULL DEFAULT false;
