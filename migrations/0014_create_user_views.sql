-- 0014_create_user_views.sql - the user read model that `factord project`
-- keeps beside the auth factors, for the gateway's GetMyUser and GetMyPhone
-- (projections/user_views.h, docs/architecture.md, "The projector").
--
-- One row per user that is not removed. state holds ZITADEL's JSON name
-- ('USER_STATE_ACTIVE', ...), so a reader renders a row without a mapping.
-- phone is the current number, phone_verified whether that number is
-- verified. sequence and changed_at are those of the last event that
-- changed the row (the user's "details"); created_at is when the user was
-- added. The row's applied sequence is the auth-factor projection's
-- (factord.projected_sequences, projection 'auth_factors'): both tables are
-- written in the same batch transactions.
--
-- Existing users are filled in here from the write side (factord.users:
-- name, phone, state) and their log (the profile and e-mail of their last
-- user.human.added, the details of the last event that touched the view),
-- so that an upgrade serves GetMyUser at once. Reading each user's log by
-- its primary key, this takes about as long as a pass of `factord verify`
-- over the users; it runs once, in this migration's transaction.

CREATE TABLE factord.user_views (
    instance_id        text        NOT NULL,
    user_id            text        NOT NULL,
    resource_owner     text        NOT NULL,
    state              text        NOT NULL
                       CHECK (state IN ('USER_STATE_ACTIVE', 'USER_STATE_INACTIVE', 'USER_STATE_LOCKED')),
    user_name          text        NOT NULL DEFAULT '',
    first_name         text        NOT NULL DEFAULT '',
    last_name          text        NOT NULL DEFAULT '',
    nick_name          text        NOT NULL DEFAULT '',
    display_name       text        NOT NULL DEFAULT '',
    preferred_language text        NOT NULL DEFAULT '',
    gender             text        NOT NULL DEFAULT '',
    email              text        NOT NULL DEFAULT '',
    email_verified     boolean     NOT NULL DEFAULT false,
    phone              text        NOT NULL DEFAULT '',
    phone_verified     boolean     NOT NULL DEFAULT false,
    sequence           bigint      NOT NULL CHECK (sequence >= 1),
    created_at         timestamptz NOT NULL,
    changed_at         timestamptz NOT NULL,
    PRIMARY KEY (instance_id, user_id)
) WITH (fillfactor = 80);

COMMENT ON TABLE factord.user_views IS
    'Read model: each user as GetMyUser and GetMyPhone show it, kept by factord project.';

INSERT INTO factord.user_views (instance_id, user_id, resource_owner, state, user_name, first_name,
    last_name, nick_name, display_name, preferred_language, gender, email, email_verified, phone,
    phone_verified, sequence, created_at, changed_at)
SELECT u.instance_id, u.user_id, u.resource_owner,
       CASE u.status WHEN 'locked' THEN 'USER_STATE_LOCKED'
                     WHEN 'inactive' THEN 'USER_STATE_INACTIVE'
                     ELSE 'USER_STATE_ACTIVE' END,
       u.user_name,
       coalesce(a.payload->>'firstName', ''), coalesce(a.payload->>'lastName', ''),
       coalesce(a.payload->>'nickName', ''), coalesce(a.payload->>'displayName', ''),
       coalesce(a.payload->>'preferredLanguage', ''), coalesce(a.payload->>'gender', ''),
       coalesce(a.payload->>'email', ''), coalesce(a.payload->>'isEmailVerified' = 'true', false),
       u.phone, u.phone_verified,
       coalesce(l.sequence, u.sequence), coalesce(a.created_at, u.created_at),
       coalesce(l.created_at, u.changed_at)
  FROM factord.users u
  LEFT JOIN LATERAL (SELECT e.payload, e.created_at FROM factord.events e
                      WHERE e.instance_id = u.instance_id AND e.aggregate_type = 'user'
                        AND e.aggregate_id = u.user_id AND e.type = 'user.human.added'
                      ORDER BY e.sequence DESC LIMIT 1) AS a ON true
  LEFT JOIN LATERAL (SELECT e.sequence, e.created_at FROM factord.events e
                      WHERE e.instance_id = u.instance_id AND e.aggregate_type = 'user'
                        AND e.aggregate_id = u.user_id
                        AND e.type IN ('user.human.added', 'user.human.phone.changed',
                                       'user.human.phone.verified', 'user.human.phone.removed',
                                       'user.locked', 'user.unlocked', 'user.deactivated',
                                       'user.reactivated')
                      ORDER BY e.sequence DESC LIMIT 1) AS l ON true
 WHERE u.status <> 'removed' AND u.sequence >= 1;
