-- 0002_create_commands.sql - one row per decided command (brief §4.4).
--
-- The command id is a global idempotency key: redelivery finds the row and
-- replies with the stored outcome. A redelivery has the same instance and
-- the same content hash (SHA-256 of the canonical command); anything else
-- is a reused id with different content, including the same id sent to
-- another instance.

CREATE TABLE factord.commands (
    id           uuid        PRIMARY KEY,
    instance_id  text        NOT NULL,
    type         text        NOT NULL,   -- wire name, '' when undecodable
    user_id      text        NOT NULL,
    content_hash bytea       NOT NULL CHECK (octet_length(content_hash) = 32),
    http_status  int         NOT NULL CHECK (http_status BETWEEN 100 AND 599),
    body         json        NOT NULL,   -- the reply body, kept byte for byte:
                                         -- a repeated reply is identical
    reply_to     text        NOT NULL,   -- where replies go (replyTo or the default)
    decided_at   timestamptz NOT NULL DEFAULT now()
);
