-- Follow-up automations: when a copy of one template was delivered and, within a window, its
-- recipient did not open, click or reply, send another template to them in the same thread.

CREATE TABLE automations (
    id                 bigserial PRIMARY KEY,
    owner_id           bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name               text NOT NULL DEFAULT '',
    trigger_template   text NOT NULL REFERENCES templates (key),
    condition          text NOT NULL CHECK (condition IN ('no_open', 'no_click', 'no_reply')),
    window_seconds     integer NOT NULL CHECK (window_seconds > 0),
    followup_template  text NOT NULL REFERENCES templates (key),
    -- Send at this hour of the recipient's day (their `time_zone` field, else UTC).
    send_hour          smallint CHECK (send_hour BETWEEN 0 AND 23),
    created_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz
);
CREATE INDEX automations_trigger_idx ON automations (trigger_template) WHERE deleted_at IS NULL;

-- One row per (automation, copy that triggered it): the scheduler's state. The primary key is
-- what makes a follow-up fire at most once, whatever the number of nodes.
CREATE TABLE followups (
    automation_id     bigint NOT NULL REFERENCES automations (id) ON DELETE CASCADE,
    copy_id           uuid NOT NULL REFERENCES copies (id) ON DELETE CASCADE,
    recipient         text NOT NULL,
    due_at            timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'sent', 'skipped', 'cancelled', 'failed')),
    reason            text,
    sent_message_id   uuid,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (automation_id, copy_id)
);
CREATE INDEX followups_due_idx ON followups (due_at) WHERE status = 'pending';
CREATE INDEX followups_recipient_idx ON followups (lower(recipient)) WHERE status = 'pending';

-- Recipients who unsubscribed: no follow-up goes to them.
CREATE TABLE unsubscribes (
    recipient   text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The first moment at or after `base` when the clock in time zone `tz` shows `hour`:00. An
-- unknown zone counts as UTC, so that one bad field never stops the scheduler.
CREATE FUNCTION mailtally_at_hour(base timestamptz, tz text, hour integer)
RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
DECLARE
    zone text := coalesce(nullif(tz, ''), 'UTC');
    local timestamp;
    candidate timestamp;
BEGIN
    BEGIN
        local := base AT TIME ZONE zone;
    EXCEPTION WHEN invalid_parameter_value OR data_exception THEN
        zone := 'UTC';
        local := base AT TIME ZONE zone;
    END;
    candidate := date_trunc('day', local) + make_interval(hours => hour);
    IF candidate < local THEN
        candidate := candidate + interval '1 day';
    END IF;
    RETURN candidate AT TIME ZONE zone;
END $$;
