-- 0005_create_checkpoints.sql - durable positions of the log's readers (the
-- relay), by name.

CREATE TABLE factord.checkpoints (
    name       text        PRIMARY KEY,
    position   bigint      NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
