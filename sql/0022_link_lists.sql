-- Links stored once per distinct list instead of once per message: 5,000 copies of one
-- template carry the same tracked links, so they share one row. A list is addressed by the
-- SHA-256 of its canonical form (`mailtally_link_list_digest`), so that every way of sending
-- finds the row another message wrote. `links` stays, as a view of the same rows as before, so
-- that every reader (reports, the timeline, webhooks) reads what it read.

CREATE TABLE link_lists (
    digest  bytea PRIMARY KEY,
    idx     integer[] NOT NULL,
    urls    text[] NOT NULL,
    CHECK (cardinality(idx) = cardinality(urls) AND cardinality(idx) > 0)
);

-- The one definition of a list's address: its indexes and URLs, in index order, as JSON text.
CREATE FUNCTION mailtally_link_list_digest(idx integer[], urls text[]) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT sha256(convert_to(json_build_array(idx, urls)::text, 'UTF8'))
$$;

ALTER TABLE messages ADD COLUMN link_list bytea REFERENCES link_lists (digest);
CREATE INDEX messages_link_list_idx ON messages (link_list) WHERE link_list IS NOT NULL;

-- Every message's links, as one list in index order.
CREATE TEMP TABLE message_lists ON COMMIT DROP AS
SELECT message_id, array_agg(idx ORDER BY idx) AS idx, array_agg(url ORDER BY idx) AS urls
FROM links GROUP BY message_id;
INSERT INTO link_lists (digest, idx, urls)
SELECT DISTINCT ON (d) d, idx, urls
FROM (SELECT mailtally_link_list_digest(idx, urls) AS d, idx, urls FROM message_lists) l;
UPDATE messages m SET link_list = mailtally_link_list_digest(l.idx, l.urls)
FROM message_lists l WHERE l.message_id = m.id;

DROP TABLE links;
CREATE VIEW links AS
SELECT m.id AS message_id, l.idx, l.url
FROM messages m
JOIN link_lists ll ON ll.digest = m.link_list
CROSS JOIN LATERAL unnest(ll.idx, ll.urls) AS l (idx, url);
