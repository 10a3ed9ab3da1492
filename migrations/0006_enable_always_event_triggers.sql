-- 0006_enable_always_event_triggers.sql - the append-only triggers of
-- factord.events (0001) also fire under session_replication_role = replica,
-- which skips ordinary triggers: a restore or a logical-replication apply
-- cannot rewrite the log either (brief §4.8).

ALTER TABLE factord.events ENABLE ALWAYS TRIGGER events_no_update_delete;
ALTER TABLE factord.events ENABLE ALWAYS TRIGGER events_no_truncate;
