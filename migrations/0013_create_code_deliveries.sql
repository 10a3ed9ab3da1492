-- 0013_create_code_deliveries.sql - the notifier's own record of every code
-- it was asked to send (factord notify, docs/notifier.md).
--
-- One row per code event (instance, user, sequence of the code event). It is
-- what makes the notifier safe to restart: a code whose row says sent or
-- failed is never sent again, and a row not yet recorded (recorded = false)
-- only needs its RecordCodeDelivery command produced again. Rows in state
-- sending are the codes a crash may have interrupted mid-send: those are
-- sent again, with the same idempotency key. created_at serves the per-user
-- rate limit.

CREATE TABLE factord.code_deliveries (
    instance_id   text        NOT NULL,
    user_id       text        NOT NULL,
    code_sequence bigint      NOT NULL CHECK (code_sequence >= 1),
    kind          text        NOT NULL CHECK (kind IN ('phone', 'otpSms')),
    state         text        NOT NULL CHECK (state IN ('sending', 'sent', 'failed', 'skipped')),
    attempts      integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    provider      text        NOT NULL DEFAULT '',
    message_id    text        NOT NULL DEFAULT '',
    reason        text        NOT NULL DEFAULT '',
    recorded      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, user_id, code_sequence)
);

CREATE INDEX code_deliveries_user_recent
    ON factord.code_deliveries (instance_id, user_id, created_at);

COMMENT ON TABLE factord.code_deliveries IS
    'The notifier''s delivery record per code event: never send one twice once sent, never drop one.';
