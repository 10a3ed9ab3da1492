-- 0003_create_users.sql - the write-side projection of the user aggregate
-- (brief §4.9): one column per dom_user field, updated in the transaction
-- that appends the user's events and rebuildable by folding the log.
-- Commands are decided against these rows, loaded FOR UPDATE.
--
-- Empty strings stand for "none" (no phone, no pending code), as in
-- dom_user; only the code's expiry is NULL when there is no code.

CREATE TABLE factord.users (
    instance_id     text        NOT NULL,
    user_id         text        NOT NULL,
    resource_owner  text        NOT NULL,
    user_name       text        NOT NULL,
    status          text        NOT NULL,  -- dom_user_status_name()
    sequence        bigint      NOT NULL CHECK (sequence >= 0),
    phone           text        NOT NULL DEFAULT '',
    phone_verified  boolean     NOT NULL DEFAULT false,
    verified_phone  text        NOT NULL DEFAULT '',
    otp_sms         boolean     NOT NULL DEFAULT false,
    code_enc        text        NOT NULL DEFAULT '',
    code_expires_at timestamptz,
    created_at      timestamptz NOT NULL,
    changed_at      timestamptz NOT NULL,
    PRIMARY KEY (instance_id, user_id)
);

-- User names are unique per instance among live users, case-insensitively
-- as in ZITADEL. A racing import of the same name fails with 23505, which
-- the store reports as a conflict: the batch is decided again and then sees
-- the name taken.
CREATE UNIQUE INDEX users_user_name_key
    ON factord.users (instance_id, lower(user_name))
    WHERE status <> 'removed';
