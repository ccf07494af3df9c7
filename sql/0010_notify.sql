-- Webhooks: endpoints owned by a user (their own messages) or by a user for their team (what
-- they may see of the team's messages), and an outbox of deliveries, one row per endpoint and
-- event, so that a notification is sent at least once and recorded exactly once.

-- The inserting transaction of each event. Readers that follow the table (notifications) read
-- only events of transactions older than the oldest one still running, in (tx, seq) order:
-- such rows are final, so a cursor over them never skips a row that commits late, which a
-- cursor over `seq` alone would.
ALTER TABLE events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX events_tx_idx ON events (tx, seq);

CREATE TABLE webhook_endpoints (
    id               bigserial PRIMARY KEY,
    owner_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scope            text NOT NULL DEFAULT 'user' CHECK (scope IN ('user', 'team')),
    url              text NOT NULL,
    secret           text NOT NULL,
    event_types      text[] NOT NULL,
    include_machine  boolean NOT NULL DEFAULT false,
    failures_in_row  integer NOT NULL DEFAULT 0,
    disabled_at      timestamptz,
    disabled_reason  text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_owner_idx ON webhook_endpoints (owner_id);

CREATE TABLE webhook_outbox (
    id               uuid PRIMARY KEY,
    endpoint_id      bigint NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    copy_id          uuid NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed', 'dropped')),
    attempts         integer NOT NULL DEFAULT 0,
    not_before       timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    last_status      integer,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, event_id, event_type)
);
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (next_attempt_at) WHERE status = 'pending';

-- How far the notification producer has read the events table.
CREATE TABLE notify_watermark (
    id        integer PRIMARY KEY CHECK (id = 1),
    last_tx   bigint NOT NULL,
    last_seq  bigint NOT NULL
);
INSERT INTO notify_watermark VALUES (1, 0, 0);
