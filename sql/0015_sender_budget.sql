-- Each sender's hourly sending budget (SENDER_MAX_BYTES_PER_HOUR) as a bucket: `used_bytes`
-- is what the sender had queued as of `at`, and drains at the budget's rate (a whole budget an
-- hour). One row a sender, so that one conditional upsert counts a charge exactly however many
-- submissions meet. Kept apart from the copies: erasing or deleting mail gives nothing back.
CREATE TABLE sender_budget (
    sender_id   bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    used_bytes  float8 NOT NULL,
    at          timestamptz NOT NULL
);
