-- 0004_create_outbox.sql - Kafka messages written in the deciding
-- transaction (rejection replies, repeated replies, dead letters).
--
-- Outbox rows take their positions from the same counter as events, so the
-- relay publishes both streams merged in one position order from one
-- checkpoint.

CREATE TABLE factord.outbox (
    position    bigint      PRIMARY KEY CHECK (position >= 1),
    instance_id text        NOT NULL,   -- '' when unknown (dead letters)
    topic       text        NOT NULL,
    key         bytea,
    value       bytea       NOT NULL,
    headers     jsonb,                  -- {"name": "value", ...}
    created_at  timestamptz NOT NULL DEFAULT now()
);
