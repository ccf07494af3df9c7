-- A mailbox whose server keeps failing is retried with exponential backoff (retry_at), then
-- given up (failed_at) until its owner sets it again; failures counts the failed connections
-- since the last successful read.
ALTER TABLE mailboxes
    ADD COLUMN failures   integer NOT NULL DEFAULT 0,
    ADD COLUMN retry_at   timestamptz,
    ADD COLUMN failed_at  timestamptz;
