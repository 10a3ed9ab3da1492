-- 0016_create_verify_checkpoints.sql - where `factord verify` got to
-- (docs/audit.md, "Checkpoints").
--
-- After a clean run, verify appends the chain head it verified (position
-- and hash), when, the signing key's id, how the run was made (full: from
-- the first event; incremental: from the position in from_position) and
-- how many events it checked, signed with the chain key: HMAC-SHA256 over
-- the canonical text of infra/crypto/checkpoint.h. The next run starts
-- from the newest row (highest id) instead of the first event, after
-- checking its signature and that the event at its position still has its
-- hash. Like the chain, a checkpoint covers the whole database, every
-- instance: positions are global.
--
-- The table is append-only as factord.events is (0001, 0006): UPDATE,
-- DELETE and TRUNCATE are refused, also under session_replication_role =
-- replica. A superuser who disables the triggers can still remove rows
-- (verify then starts from an older one: more work, nothing unchecked) or
-- insert some (without the key the signature fails, and verify says so).

CREATE TABLE factord.verify_checkpoints (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    position      bigint      NOT NULL CHECK (position >= 1),
    hash          bytea       NOT NULL CHECK (octet_length(hash) = 32),
    verified_at   timestamptz NOT NULL,
    key_id        text        NOT NULL,
    mode          text        NOT NULL CHECK (mode IN ('full', 'incremental')),
    from_position bigint      NOT NULL CHECK (from_position >= 0),
    events        bigint      NOT NULL CHECK (events >= 0),
    signature     bytea       NOT NULL CHECK (octet_length(signature) = 32)
);

COMMENT ON TABLE factord.verify_checkpoints IS
    'Append-only; signed chain heads that factord verify reached (docs/audit.md).';

CREATE FUNCTION factord.verify_checkpoints_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'factord.verify_checkpoints is append-only'
        USING ERRCODE = 'restrict_violation',
              DETAIL = format('%s on factord.verify_checkpoints refused', TG_OP),
              HINT = 'A later verify appends a newer checkpoint.';
END;
$$;

CREATE TRIGGER verify_checkpoints_no_update_delete
    BEFORE UPDATE OR DELETE ON factord.verify_checkpoints
    FOR EACH ROW EXECUTE FUNCTION factord.verify_checkpoints_refuse_change();

CREATE TRIGGER verify_checkpoints_no_truncate
    BEFORE TRUNCATE ON factord.verify_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION factord.verify_checkpoints_refuse_change();

ALTER TABLE factord.verify_checkpoints ENABLE ALWAYS TRIGGER verify_checkpoints_no_update_delete;
ALTER TABLE factord.verify_checkpoints ENABLE ALWAYS TRIGGER verify_checkpoints_no_truncate;
