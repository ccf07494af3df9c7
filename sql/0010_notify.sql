-- Webhooks: endpoints owned by a user (their own messages) or by a user for their team (what
-- they may see of the team's messages), and an outbox of deliveries, one row per endpoint and
-- event, so that a notification is sent at least once and recorded exactly once.

-- The producer follows the events table with the same settled-transaction cursor as the
-- aggregation job: events.txid (0004), in (txid, seq) order.

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
