-- Insights: the aggregation job's watermark, per-copy state and the rollups the reports read.

-- Which transaction wrote each event. `seq` is assigned at insert but becomes visible at commit,
-- so folding `seq > watermark` could skip an event committed late by a slower writer. The job
-- instead folds only events whose writing transaction is older than the oldest one still running
-- (pg_snapshot_xmin of its snapshot): those are settled, and no new event can ever appear below
-- that bound. The watermark is the pair (txid, seq) of the last folded event in that order.
ALTER TABLE events ADD COLUMN txid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX events_fold_idx ON events (txid, seq);

-- One row; locked by the folding transaction, so two nodes never fold the same event.
CREATE TABLE insights_watermark (
    id             smallint PRIMARY KEY CHECK (id = 1),
    txid           bigint NOT NULL DEFAULT 0,
    seq            bigint NOT NULL DEFAULT 0,
    folded_events  bigint NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO insights_watermark (id) VALUES (1);

-- What the job knows of each copy: a pure function of the copy's events and its message, so
-- that recomputing it from scratch whenever a copy gets a new event is idempotent and handles
-- events arriving out of order. The dimension columns copy the message's, so that rollups can be
-- corrected without the message (deletion).
-- team_id is 0 for "no team" in this table and the rollups so that it can be part of a key.
CREATE TABLE insights_copy_state (
    copy_id               uuid PRIMARY KEY,
    message_id            uuid NOT NULL,
    template_key          text NOT NULL,
    sender_id             bigint NOT NULL,
    team_id               bigint NOT NULL,
    visibility            text NOT NULL,
    day                   date NOT NULL,
    bounced               boolean NOT NULL,
    delivered_at          timestamptz,
    opens                 integer NOT NULL,
    human_opens           integer NOT NULL,
    clicks                integer NOT NULL,
    human_clicks          integer NOT NULL,
    first_open_at         timestamptz,
    first_human_open_at   timestamptz,
    first_click_at        timestamptz,
    first_human_click_at  timestamptz,
    last_event_at         timestamptz
);
CREATE INDEX insights_copy_state_message_idx ON insights_copy_state (message_id);

CREATE TABLE insights_copy_links (
    copy_id       uuid NOT NULL,
    url           text NOT NULL,
    clicks        integer NOT NULL,
    human_clicks  integer NOT NULL,
    PRIMARY KEY (copy_id, url)
);

CREATE TABLE insights_copy_clients (
    copy_id      uuid NOT NULL,
    client       text NOT NULL,
    device       text NOT NULL,
    opens        integer NOT NULL,
    human_opens  integer NOT NULL,
    PRIMARY KEY (copy_id, client, device)
);

-- Rollups. Every one carries (sender, team, visibility) so that the visibility rule applies to
-- rollups exactly as to messages, and the day of sending for from/to filters.
CREATE TABLE insights_daily (
    template_key         text NOT NULL,
    day                  date NOT NULL,
    sender_id            bigint NOT NULL,
    team_id              bigint NOT NULL,
    visibility           text NOT NULL,
    sent                 bigint NOT NULL,
    bounced              bigint NOT NULL,
    opens                bigint NOT NULL,
    human_opens          bigint NOT NULL,
    unique_opens         bigint NOT NULL,
    human_unique_opens   bigint NOT NULL,
    clicks               bigint NOT NULL,
    human_clicks         bigint NOT NULL,
    unique_clicks        bigint NOT NULL,
    human_unique_clicks  bigint NOT NULL,
    PRIMARY KEY (template_key, day, sender_id, team_id, visibility)
);

CREATE TABLE insights_links (
    template_key         text NOT NULL,
    day                  date NOT NULL,
    sender_id            bigint NOT NULL,
    team_id              bigint NOT NULL,
    visibility           text NOT NULL,
    url                  text NOT NULL,
    clicks               bigint NOT NULL,
    human_clicks         bigint NOT NULL,
    unique_clicks        bigint NOT NULL,
    human_unique_clicks  bigint NOT NULL,
    PRIMARY KEY (template_key, day, sender_id, team_id, visibility, url)
);

CREATE TABLE insights_clients (
    template_key         text NOT NULL,
    day                  date NOT NULL,
    sender_id            bigint NOT NULL,
    team_id              bigint NOT NULL,
    visibility           text NOT NULL,
    client               text NOT NULL,
    device               text NOT NULL,
    opens                bigint NOT NULL,
    human_opens          bigint NOT NULL,
    unique_opens         bigint NOT NULL,
    human_unique_opens   bigint NOT NULL,
    PRIMARY KEY (template_key, day, sender_id, team_id, visibility, client, device)
);
