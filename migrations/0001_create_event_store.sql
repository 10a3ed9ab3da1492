-- 0001_create_event_store.sql - the append-only event log and the global
-- position counter (brief §3, §4.1, §4.2, §4.8).
--
-- Positions come from the single counter row: a writing transaction takes
-- it (UPDATE ... RETURNING) after everything else is decided and holds its
-- row lock until COMMIT, so positions become visible in commit order and a
-- reader that saw position P never later finds a new one below P. A
-- bigserial would not give that. A rolled-back batch gives its positions
-- back (the counter's UPDATE rolls back with it), so committed positions
-- are dense; readers still never wait for a gap.
--
-- The database itself refuses to change the log: row-level triggers raise
-- on UPDATE and DELETE, a statement-level trigger on TRUNCATE.

CREATE SCHEMA IF NOT EXISTS factord;

CREATE TABLE factord.events (
    instance_id     text        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL,
    position        bigint      NOT NULL,
    type            text        NOT NULL,
    revision        smallint    NOT NULL,
    created_at      timestamptz NOT NULL,
    creator         text        NOT NULL,
    resource_owner  text        NOT NULL,
    command_id      uuid,                      -- NULL: imported, no command
    last_of_command boolean     NOT NULL DEFAULT false,
    payload         jsonb       NOT NULL DEFAULT '{}',
    CONSTRAINT events_pkey PRIMARY KEY (instance_id, aggregate_type, aggregate_id, sequence),
    CONSTRAINT events_position_key UNIQUE (position),
    CONSTRAINT events_sequence_check CHECK (sequence >= 1),
    CONSTRAINT events_position_check CHECK (position >= 1)
);

COMMENT ON TABLE factord.events IS
    'Append-only event log; position is global and visible in commit order.';

CREATE FUNCTION factord.events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'factord.events is append-only'
        USING ERRCODE = 'restrict_violation',
              DETAIL = format('%s on factord.events refused', TG_OP),
              HINT = 'Events are facts: append a compensating event instead.';
END;
$$;

CREATE TRIGGER events_no_update_delete
    BEFORE UPDATE OR DELETE ON factord.events
    FOR EACH ROW EXECUTE FUNCTION factord.events_refuse_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON factord.events
    FOR EACH STATEMENT EXECUTE FUNCTION factord.events_refuse_change();

CREATE TABLE factord.position_counter (
    id    smallint PRIMARY KEY CHECK (id = 1),
    value bigint   NOT NULL CHECK (value >= 0)
);

INSERT INTO factord.position_counter (id, value) VALUES (1, 0);
