-- Reply detection: each user's mailbox that mailtally watches over IMAP, and replies in the
-- rollups.

CREATE TABLE mailboxes (
    user_id          bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    host             text NOT NULL,
    port             integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    security         text NOT NULL CHECK (security IN ('tls', 'starttls', 'none')),
    username         text NOT NULL,
    -- ChaCha20-Poly1305 with the MAILBOX_KEY setting: nonce || ciphertext.
    password_sealed  bytea NOT NULL,
    folder           text NOT NULL DEFAULT 'INBOX',
    -- Checkpoint: messages up to last_uid of this UIDVALIDITY have been looked at.
    uidvalidity      bigint,
    last_uid         bigint NOT NULL DEFAULT 0,
    -- The node watching it, so that two nodes do not both hold a connection.
    lease_owner      text,
    lease_until      timestamptz,
    last_sync_at     timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE insights_copy_state ADD COLUMN replies integer NOT NULL DEFAULT 0;
ALTER TABLE insights_daily
    ADD COLUMN replies         bigint NOT NULL DEFAULT 0,
    ADD COLUMN unique_replies  bigint NOT NULL DEFAULT 0;
