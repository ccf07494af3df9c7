-- Delivery bookkeeping: which node holds a copy's lease (so that a restarted node frees the
-- leases it held before a crash at once), and where a delivered copy went.
ALTER TABLE copies ADD COLUMN lease_owner text;
ALTER TABLE copies ADD COLUMN delivered_via text CHECK (delivered_via IN ('upstream', 'capture'));
CREATE INDEX copies_lease_owner_idx ON copies (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX copies_captured_idx ON copies (message_id) WHERE delivered_via = 'capture';

-- Copy bodies are compressed with lz4 rather than pglz: several times cheaper in CPU on the
-- accept path for text-heavy mail. Servers built without lz4 keep the default.
DO $$
BEGIN
    ALTER TABLE copies ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 not available; copy bodies stay compressed with pglz';
END $$;
