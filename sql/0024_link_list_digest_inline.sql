-- The digest of a link list, as 0022 defines it, but no longer STRICT: a STRICT SQL function
-- whose body calls a non-strict function (json_build_array) is never inlined, so each enqueue
-- ran it twice through the SQL-function executor (planned on every call). Inlined, it is one
-- expression of the statement. Every caller passes two non-empty arrays (the lists are
-- CHECKed non-empty); a NULL argument now digests as NULL array text instead of giving NULL,
-- which no caller relies on.
CREATE OR REPLACE FUNCTION mailtally_link_list_digest(idx integer[], urls text[]) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(convert_to(json_build_array(idx, urls)::text, 'UTF8'))
$$;
