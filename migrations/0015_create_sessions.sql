-- 0015_create_sessions.sql - what the session API (docs/gateway.md,
-- "Sessions") needs: a way to find a session's events by its id.
--
-- A session lives on its user: user.session.added opens it, and the later
-- events of that user that carry its id in the payload (token.set, the
-- OTP-SMS code and successful check of the session) change it. The
-- gateway folds those events (projections/sessions.c) for GetSession and
-- SetSession, reading them through this index; nothing else is stored.
-- The index is partial: only events that name a session are in it, so
-- the rest of the log costs it nothing. The query repeats the predicate
-- (payload ? 'sessionId') so that the planner can use it.
--
-- Built in the migration's transaction, which keeps writers of the log
-- waiting while it scans factord.events once; with no session event yet
-- the index itself stays empty.

CREATE INDEX events_session_key
    ON factord.events (instance_id, (payload->>'sessionId'))
    WHERE payload ? 'sessionId';

-- The session whose challenge a user's pending OTP-SMS code answers
-- (dom_user.otp_code_session): a check in a session takes only the code
-- that session asked for. '' for a code of ChallengeOTPSMS, and for every
-- existing row, which is what folding their events (none names a session
-- yet) gives.
ALTER TABLE factord.users
    ADD COLUMN otp_code_session text NOT NULL DEFAULT '';
