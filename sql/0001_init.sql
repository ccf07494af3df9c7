-- mailtally's first schema: accounts, messages and their per-recipient copies, links, events.
-- Messages are keyed by a UUIDv7 chosen by the relay; every table holding tracking data carries
-- message_id so that the schema can be distributed by it (Citus) later.

CREATE TABLE teams (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id                  bigserial PRIMARY KEY,
    email               text NOT NULL,
    team_id             bigint REFERENCES teams (id),
    role                text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'admin')),
    password_hash       text NOT NULL,
    default_visibility  text NOT NULL DEFAULT 'team' CHECK (default_visibility IN ('private', 'team', 'shared')),
    disabled_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);
-- Addresses compare case-insensitively, as mail systems treat them in practice.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Bearer tokens for the API; only a SHA-256 of each token is kept.
CREATE TABLE api_tokens (
    id            bigserial PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash    bytea NOT NULL UNIQUE,
    label         text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);

-- Installation-wide values that must survive restarts (the generated tracking secret, ...).
CREATE TABLE server_settings (
    key         text PRIMARY KEY,
    value       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE templates (
    key            text PRIMARY KEY,
    name           text NOT NULL DEFAULT '',
    first_subject  text,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE messages (
    id              uuid PRIMARY KEY,
    sender_id       bigint NOT NULL REFERENCES users (id),
    team_id         bigint REFERENCES teams (id),
    visibility      text NOT NULL CHECK (visibility IN ('private', 'team', 'shared')),
    template_key    text NOT NULL REFERENCES templates (key),
    subject         text,
    header_message_id text,
    envelope_from   text NOT NULL,
    deal            text,
    lead            text,
    project         text,
    track           text NOT NULL DEFAULT 'opens,clicks',
    -- Why the relay sent the message unchanged, when it did (signed, unparseable, ...).
    untouched       text,
    size_bytes      integer NOT NULL,
    headers         jsonb NOT NULL DEFAULT '{}',
    archived_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_sender_idx ON messages (sender_id, created_at);
CREATE INDEX messages_template_idx ON messages (template_key, created_at);
CREATE INDEX messages_crm_idx ON messages (deal, lead, project);

-- One copy per recipient: the exact bytes to deliver and the delivery state.
CREATE TABLE copies (
    id               uuid PRIMARY KEY,
    message_id       uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    recipient        text NOT NULL,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'deferred', 'delivered', 'bounced')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    last_error       text,
    body             bytea,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX copies_message_idx ON copies (message_id);
CREATE INDEX copies_recipient_idx ON copies (lower(recipient));
-- The delivery workers' claim query only looks at copies still to deliver.
CREATE INDEX copies_due_idx ON copies (next_attempt_at) WHERE status IN ('queued', 'deferred');

CREATE TABLE links (
    message_id  uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    idx         integer NOT NULL,
    url         text NOT NULL,
    PRIMARY KEY (message_id, idx)
);

-- Every event of every copy, partitioned by month. The id is chosen where the event happens
-- (UUIDv7), so that replaying a spool is idempotent through the primary key.
CREATE TABLE events (
    id           uuid NOT NULL,
    occurred_at  timestamptz NOT NULL,
    message_id   uuid NOT NULL,
    copy_id      uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('accepted', 'delivered', 'deferred', 'bounced', 'open', 'click', 'reply')),
    link_idx     integer,
    class        text CHECK (class IN ('human', 'apple_mpp', 'proxy', 'scanner', 'prefetch')),
    reason       text,
    ip           inet,
    user_agent   text,
    method       text,
    client       text,
    device       text,
    os           text,
    detail       text,
    seq          bigserial,
    PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX events_copy_idx ON events (copy_id, occurred_at);
CREATE INDEX events_seq_idx ON events (seq);

-- Rows outside every monthly partition land here rather than fail.
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- Creates the monthly partitions from `months_back` before to `months_ahead` after now.
CREATE FUNCTION mailtally_ensure_event_partitions(months_back integer, months_ahead integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    m date;
    name text;
BEGIN
    FOR i IN -months_back..months_ahead LOOP
        m := (date_trunc('month', now()) + make_interval(months => i))::date;
        name := 'events_' || to_char(m, 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                name, m, (m + interval '1 month')::date);
        END IF;
    END LOOP;
END $$;

SELECT mailtally_ensure_event_partitions(1, 3);
