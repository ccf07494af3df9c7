-- Sending from the API: template content, signatures, group emails and their idempotency keys,
-- per-sender pacing, and each copy's own Message-ID and merge fields.

-- A template key is what reports group by; a template may also hold the content the API sends.
-- `html IS NULL` means a key known only from mail sent through SMTP (or content deleted).
ALTER TABLE templates
    ADD COLUMN owner_id    bigint REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN team_id     bigint REFERENCES teams (id),
    ADD COLUMN subject     text,
    ADD COLUMN html        text,
    ADD COLUMN text_body   text,
    ADD COLUMN updated_at  timestamptz;

-- Appended to what a user sends through the API.
ALTER TABLE users
    ADD COLUMN signature_html  text,
    ADD COLUMN signature_text  text;

-- A copy composed for one recipient (group email, follow-up) has its own Message-ID, which
-- replies name; `fields` are the merge values it was written with (follow-ups reuse them).
ALTER TABLE copies
    ADD COLUMN header_message_id  text,
    ADD COLUMN fields             jsonb;
CREATE INDEX copies_header_message_id_idx ON copies (header_message_id)
    WHERE header_message_id IS NOT NULL;
CREATE INDEX messages_header_message_id_idx ON messages (header_message_id)
    WHERE header_message_id IS NOT NULL;

-- One row per group-email request that carried an Idempotency-Key: a retry answers the first
-- response and sends nothing. Written in the transaction that queues the copies.
CREATE TABLE group_sends (
    sender_id        bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    idempotency_key  text NOT NULL,
    request_hash     bytea NOT NULL,
    message_id       uuid NOT NULL,
    response         jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sender_id, idempotency_key)
);

-- The next free sending slot of each sender, so that composed mail leaves at the sender's rate
-- across requests, nodes and restarts.
CREATE TABLE sender_pacing (
    sender_id  bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    next_slot  timestamptz NOT NULL
);
