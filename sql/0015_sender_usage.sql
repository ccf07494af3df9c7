-- Bytes each sender queued, per minute: the hourly sending budget (SENDER_MAX_BYTES_PER_HOUR)
-- counts the last hour of rows. Kept apart from the copies so that erasing or deleting mail
-- does not give the budget back.
CREATE TABLE sender_usage (
    sender_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    minute     timestamptz NOT NULL,
    bytes      bigint NOT NULL,
    PRIMARY KEY (sender_id, minute)
);
