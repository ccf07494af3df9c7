-- Deliverability: complaints and unsubscribes are events of their copy, and the suppression
-- list every way of sending consults before anything is queued.
ALTER TABLE events DROP CONSTRAINT events_kind_check;
ALTER TABLE events ADD CONSTRAINT events_kind_check CHECK (kind IN (
    'accepted', 'delivered', 'deferred', 'bounced', 'open', 'click', 'reply',
    'complaint', 'unsubscribe'));

-- One list per scope, like template keys: a team's, or a sender's own without a team. The
-- address is kept lower-cased; `address_digest` (SHA-256 of it) is what lookups compare, and
-- what erasure keeps of a complaint or an unsubscribe, so that erasing someone never makes
-- mailtally mail them again. A removed entry stays as history (removed_at, removed_by).
CREATE TABLE suppressions (
    id              bigserial PRIMARY KEY,
    team_id         bigint REFERENCES teams (id) ON DELETE CASCADE,
    owner_id        bigint REFERENCES users (id) ON DELETE CASCADE,
    address         text,
    address_digest  bytea NOT NULL,
    reason          text NOT NULL
                    CHECK (reason IN ('hard_bounce', 'soft_bounce', 'complaint', 'unsubscribe', 'manual')),
    copy_id         uuid,
    detail          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      bigint REFERENCES users (id) ON DELETE SET NULL,
    removed_at      timestamptz,
    removed_by      bigint REFERENCES users (id) ON DELETE SET NULL,
    CHECK ((team_id IS NULL) <> (owner_id IS NULL))
);
CREATE UNIQUE INDEX suppressions_active_idx
    ON suppressions (coalesce(team_id, 0), coalesce(owner_id, 0), address_digest)
    WHERE removed_at IS NULL;
CREATE INDEX suppressions_digest_idx ON suppressions (address_digest);

-- A copy that was not sent because its recipient is suppressed (SUPPRESSED_RECIPIENTS=record).
ALTER TABLE copies DROP CONSTRAINT copies_status_check;
ALTER TABLE copies ADD CONSTRAINT copies_status_check
    CHECK (status IN ('queued', 'deferred', 'delivered', 'bounced', 'suppressed'));

-- Reports split bounces into hard and soft (a failure on a transient status: not delivered
-- either) and count complaints and unsubscribes. Until now every bounce was a send-time 5xx,
-- so no existing copy has a soft bounce, a complaint or an unsubscribe.
ALTER TABLE insights_copy_state
    ADD COLUMN soft_bounced  boolean NOT NULL DEFAULT false,
    ADD COLUMN complained    boolean NOT NULL DEFAULT false,
    ADD COLUMN unsubscribed  boolean NOT NULL DEFAULT false;
ALTER TABLE insights_daily
    ADD COLUMN soft_bounced  bigint NOT NULL DEFAULT 0,
    ADD COLUMN complaints    bigint NOT NULL DEFAULT 0,
    ADD COLUMN unsubscribes  bigint NOT NULL DEFAULT 0;
