-- Tracking nodes poll recently delivered copies (classification's timing rules); without this
-- index each poll would scan every copy.
CREATE INDEX copies_delivered_idx ON copies (delivered_at) WHERE delivered_at IS NOT NULL;
