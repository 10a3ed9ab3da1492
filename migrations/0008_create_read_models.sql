-- 0008_create_read_models.sql - the read models that `factord project`
-- keeps from the events topic, and what makes each event take effect
-- exactly once (docs/architecture.md, "The projector").
--
-- projected_sequences: per projection and (instance, user), the sequence of
-- the last event applied. The projector applies an event only when its
-- sequence is above it, in the transaction that changes the read model, so
-- a redelivered or republished event is skipped. Rows are locked FOR UPDATE
-- (sorted) by the batch that reads them; a user's first row is inserted
-- without ON CONFLICT, so two projectors racing on a new user make one of
-- them fail with 23505 and apply its batch again on fresh rows.
--
-- auth_factors: the user's second factors as ZITADEL's ListMyAuthFactors
-- shows them. type and state hold ZITADEL's JSON names ('otpSms',
-- 'AUTH_FACTOR_STATE_READY'), so a reader can render a row without a
-- mapping; sequence and the dates are those of the last event that changed
-- the row (the factor's "details"). A removed factor has no row.

CREATE TABLE factord.projected_sequences (
    projection  text        NOT NULL,
    instance_id text        NOT NULL,
    user_id     text        NOT NULL,
    sequence    bigint      NOT NULL CHECK (sequence >= 1),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, instance_id, user_id)
);

CREATE TABLE factord.auth_factors (
    instance_id    text        NOT NULL,
    user_id        text        NOT NULL,
    type           text        NOT NULL CHECK (type IN ('otpSms')),
    state          text        NOT NULL
                   CHECK (state IN ('AUTH_FACTOR_STATE_NOT_READY', 'AUTH_FACTOR_STATE_READY')),
    sequence       bigint      NOT NULL CHECK (sequence >= 1),
    created_at     timestamptz NOT NULL,
    changed_at     timestamptz NOT NULL,
    resource_owner text        NOT NULL,
    PRIMARY KEY (instance_id, user_id, type)
);

COMMENT ON TABLE factord.auth_factors IS
    'Read model: the auth factors of each user (ListMyAuthFactors), kept by factord project.';
