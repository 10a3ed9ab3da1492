-- tests/chaos/checks.sql - the chaos soak's checks (scripts/chaos.sh,
-- docs/chaos.md), run on the soak's own database once everything settled.
--
-- Inputs: factord's tables, and what chaos.sh loaded into schema chaos:
--   chaos.sent       the generator's manifest (tests/chaos/gen.c), one row
--                    per record produced to the commands topic
--   chaos.kills      when each component, the broker and PostgreSQL were
--                    killed and restarted (wall clock, ms)
--   chaos.t_events, chaos.t_replies, chaos.t_dlq
--                    the topics read back whole (partition, offset, Kafka
--                    timestamp in ms, key, value)
-- Output: one row per check, tab-separated: name, figure, ok (t/f). The
-- figures that are measurements only (latencies) are always ok.
\set ON_ERROR_STOP on

-- Command ids sent as valid commands; type is that of the first record
-- with the id (a reuse with other content comes later on the same
-- partition, so the first one is what factord decides and stores).
CREATE TEMP TABLE v AS
SELECT id::uuid AS id, min(instance) AS instance, min(user_id) AS user_id,
       min(type) FILTER (WHERE kind = 'cmd') AS type, bool_or(kind = 'diff') AS reused,
       count(*) AS records, min(sent_ms) FILTER (WHERE kind = 'cmd') AS sent_ms,
       min(partition) FILTER (WHERE kind = 'cmd') AS partition
  FROM chaos.sent WHERE kind IN ('cmd', 'dup', 'diff') GROUP BY id;
CREATE UNIQUE INDEX ON v (id);
CREATE UNIQUE INDEX ON v ((id::text));
CREATE TEMP TABLE bad AS SELECT kind, id, token FROM chaos.sent WHERE kind IN ('bad', 'badnoid');
CREATE INDEX ON bad (id);
CREATE TEMP TABLE r AS
SELECT k AS key, v AS value, v::jsonb AS j, ts FROM chaos.t_replies;
CREATE INDEX ON r (key);
ANALYZE v; ANALYZE bad; ANALYZE r;
-- jc: the reply without a success body's "code" (the phone code of a
-- returnCode reply; a rejection's "code" is its gRPC code and stays).
CREATE TEMP TABLE rv AS
SELECT r.key::uuid AS id, r.value, r.j,
       CASE WHEN r.j->>'httpStatus' = '200' THEN r.j #- '{body,code}' ELSE r.j END AS jc, r.ts
  FROM r JOIN v ON v.id::text = r.key;
CREATE INDEX ON rv (id);
ANALYZE rv;
CREATE TEMP TABLE tes AS
SELECT v::jsonb->>'instanceId' AS i, v::jsonb->>'aggregateId' AS u, (v::jsonb->>'sequence')::bigint AS s,
       min((v::jsonb->>'position')::bigint) AS pos, max((v::jsonb->>'position')::bigint) AS pos_max,
       min(v::jsonb->>'type') AS type, count(*) AS copies, count(DISTINCT v) AS variants,
       count(DISTINCT p) AS parts, bool_and(k = v::jsonb->>'aggregateId') AS keyed, min(o) AS first_o
  FROM chaos.t_events GROUP BY 1, 2, 3;
CREATE INDEX ON tes (i, u, s);
ANALYZE tes;
CREATE TEMP TABLE fig (n serial, name text, figure text, ok boolean, lost bigint DEFAULT 0, dup bigint DEFAULT 0);

-- 1. One stored outcome per command id, of the command sent first.
INSERT INTO fig (name, figure, ok, lost)
SELECT 'stored outcomes (factord.commands)',
       format('%s of %s command ids (%s records with repeats/reuses); %s extra, %s not the command sent',
              found, total, recs, extra, mismatched),
       total > 0 AND found = total AND extra = 0 AND mismatched = 0, total - found
  FROM (SELECT count(*) AS total, sum(records) AS recs, count(c.id) AS found,
               count(*) FILTER (WHERE c.id IS NOT NULL AND (c.instance_id, c.user_id, c.type)
                                  IS DISTINCT FROM (v.instance, v.user_id, v.type)) AS mismatched
          FROM v LEFT JOIN factord.commands c ON c.id = v.id) a,
       (SELECT count(*) AS extra FROM factord.commands c WHERE NOT EXISTS (SELECT 1 FROM v WHERE v.id = c.id)) b;

-- 2. Malformed records: each on the dead-letter topic, never stored, and
-- answered with FACTORD-Dec01 when their id could be read.
INSERT INTO fig (name, figure, ok, lost)
SELECT 'malformed records on the dead-letter topic',
       format('%s of %s (%s dead letters in all, %s from nothing we sent)', found, total, dl, unexpected),
       found = total AND unexpected = 0, total - found
  FROM (SELECT count(*) AS total,
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM chaos.t_dlq d WHERE strpos(d.v, b.token) > 0)) AS found
          FROM bad b) x,
       (SELECT count(*) AS dl,
               count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM bad b WHERE strpos(d.v, b.token) > 0)) AS unexpected
          FROM chaos.t_dlq d) y;
INSERT INTO fig (name, figure, ok, lost)
SELECT 'malformed with an id: Dec01 reply, no outcome',
       format('%s of %s replied with FACTORD-Dec01; %s stored', replied, total, stored),
       replied = total AND stored = 0, total - replied
  FROM (SELECT count(*) AS total,
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM r WHERE r.key = b.id
                                                AND r.j->'body'->>'message' LIKE '%FACTORD-Dec01%')) AS replied,
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM factord.commands c WHERE c.id = b.id::uuid)) AS stored
          FROM bad b WHERE kind = 'bad') x;

-- 3. Replies: every command has one; copies are identical (a returnCode
-- reply from the projector holds the code, a repeated command's reply from
-- the stored outcome does not: documented, counted apart); every reply is
-- the stored outcome (a reused id's FACTORD-Idem1 apart).
INSERT INTO fig (name, figure, ok, lost)
SELECT 'every command replied (replies topic)',
       format('%s of %s command ids; %s reply records, %s to ids we never sent', replied, total, recs, stray),
       replied = total AND stray = 0, total - replied
  FROM (SELECT count(*) AS total, count(*) FILTER (WHERE EXISTS (SELECT 1 FROM rv WHERE rv.id = v.id)) AS replied
          FROM v) a,
       (SELECT count(*) AS recs,
               count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM v WHERE v.id::text = r.key)
                                  AND NOT EXISTS (SELECT 1 FROM bad WHERE bad.id = r.key)) AS stray
          FROM r) b;
INSERT INTO fig (name, figure, ok, dup)
SELECT 'duplicate replies identical',
       format('%s ids replied more than once; %s with differing copies (%s differ only by the returnCode code)',
              multi, differ, codeonly),
       differ = codeonly, differ - codeonly
  FROM (SELECT count(*) FILTER (WHERE n > 1) AS multi, count(*) FILTER (WHERE nb > 1) AS differ,
               count(*) FILTER (WHERE nb > 1 AND nj = 1) AS codeonly
          FROM (SELECT rv.id, count(*) AS n, count(DISTINCT rv.value) AS nb,
                       count(DISTINCT rv.jc) AS nj
                  FROM rv JOIN v USING (id) WHERE NOT v.reused GROUP BY rv.id) s) x;
INSERT INTO fig (name, figure, ok, dup)
SELECT 'replies equal the stored outcome',
       format('%s of %s reply records differ; reused ids: %s of %s got FACTORD-Idem1', differ, total, idem_ids, reused_ids),
       differ = 0 AND idem_ids = reused_ids, differ
  FROM (SELECT count(*) AS total,
               count(*) FILTER (WHERE NOT (v.reused AND rv.j->'body'->>'message' LIKE '%FACTORD-Idem1%')
                                  AND ((rv.j->>'httpStatus')::int IS DISTINCT FROM c.http_status
                                       OR rv.jc->'body' IS DISTINCT FROM c.body::jsonb
                                       OR rv.j->>'commandId' IS DISTINCT FROM rv.id::text)) AS differ,
               count(DISTINCT rv.id) FILTER (WHERE v.reused AND rv.j->'body'->>'message' LIKE '%FACTORD-Idem1%') AS idem_ids
          FROM rv JOIN v USING (id) LEFT JOIN factord.commands c USING (id)) a,
       (SELECT count(*) AS reused_ids FROM v WHERE reused) b;

-- 4. The log: no gap per user; each command decided once.
INSERT INTO fig (name, figure, ok)
SELECT 'per-user sequences 1..n, no gap',
       format('%s users in %s instances, %s events; %s users with a gap', users, insts, evts, gaps), gaps = 0
  FROM (SELECT count(*) AS users, count(DISTINCT instance_id) AS insts, sum(n) AS evts,
               count(*) FILTER (WHERE mx <> n OR mn <> 1) AS gaps
          FROM (SELECT instance_id, aggregate_id, count(*) AS n, max(sequence) AS mx, min(sequence) AS mn
                  FROM factord.events GROUP BY 1, 2) s) x;
CREATE TEMP TABLE per_cmd AS
SELECT command_id, count(DISTINCT (instance_id, aggregate_id)) AS users, count(*) AS n,
       count(*) FILTER (WHERE last_of_command) AS lasts, max(sequence) - min(sequence) + 1 AS span,
       max(sequence) FILTER (WHERE last_of_command) AS last_seq
  FROM factord.events WHERE command_id IS NOT NULL GROUP BY command_id;
INSERT INTO fig (name, figure, ok, dup)
SELECT 'each command decided once (events)',
       format('%s accepted, %s rejected; %s with events twice or split, %s accepted without one last event, '
              '%s rejected with one, %s events of no stored command', acc, rej, twice, acc_bad, rej_bad, orphan),
       twice + acc_bad + rej_bad + orphan = 0, twice + acc_bad + rej_bad + orphan
  FROM (SELECT count(*) FILTER (WHERE c.http_status = 200) AS acc, count(*) FILTER (WHERE c.http_status <> 200) AS rej,
               count(*) FILTER (WHERE c.http_status = 200 AND (p.lasts IS DISTINCT FROM 1
                                  OR p.last_seq IS DISTINCT FROM (c.body->'details'->>'sequence')::bigint)) AS acc_bad,
               count(*) FILTER (WHERE c.http_status <> 200 AND p.lasts > 0) AS rej_bad
          FROM factord.commands c LEFT JOIN per_cmd p ON p.command_id = c.id) a,
       (SELECT count(*) FILTER (WHERE users > 1 OR lasts > 1 OR span <> n) AS twice,
               count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM factord.commands c WHERE c.id = per_cmd.command_id)) AS orphan
          FROM per_cmd) b;

-- 5. The events topic holds exactly the log, in per-user order.
INSERT INTO fig (name, figure, ok, lost, dup)
SELECT 'events topic = the log',
       format('%s events in the log, %s on the topic (%s records); %s missing, %s not in the log, %s differing copies',
              logged, topic, recs, missing, extra, differing),
       missing = 0 AND extra = 0 AND differing = 0, missing, extra + differing
  FROM (SELECT count(*) AS logged,
               count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM tes WHERE tes.i = e.instance_id AND tes.u = e.aggregate_id
                                  AND tes.s = e.sequence AND tes.pos = e.position AND tes.type = e.type)) AS missing
          FROM factord.events e) a,
       (SELECT count(*) AS topic, coalesce(sum(copies), 0) AS recs,
               count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM factord.events e WHERE tes.i = e.instance_id
                                  AND e.aggregate_type = 'user' AND tes.u = e.aggregate_id
                                  AND tes.s = e.sequence)) AS extra,
               count(*) FILTER (WHERE variants > 1 OR parts > 1 OR NOT keyed OR pos <> pos_max) AS differing
          FROM tes) b;
INSERT INTO fig (name, figure, ok)
SELECT 'events topic in per-user order',
       format('%s users whose events first appear out of sequence order', n), n = 0
  FROM (SELECT count(DISTINCT (i, u)) AS n
          FROM (SELECT i, u, s, row_number() OVER (PARTITION BY i, u ORDER BY first_o) AS rn FROM tes) x
         WHERE rn <> s) y;

-- 6. The read model equals a fold of the log: a user has the OTP-SMS
-- factor when the last of its factor-changing events adds it; the row's
-- details are that event's.
CREATE TEMP TABLE expected_af AS
SELECT instance_id, aggregate_id AS user_id, 'otpSms'::text AS type, 'AUTH_FACTOR_STATE_READY'::text AS state,
       sequence, created_at, created_at AS changed_at, resource_owner
  FROM (SELECT e.*, row_number() OVER (PARTITION BY instance_id, aggregate_id ORDER BY sequence DESC) AS rn
          FROM factord.events e
         WHERE type IN ('user.human.otp.sms.added', 'user.human.mfa.otp.sms.added', 'user.human.otp.sms.removed',
                        'user.human.mfa.otp.sms.removed', 'user.human.phone.removed', 'user.removed',
                        'user.human.added')) x
 WHERE rn = 1 AND type IN ('user.human.otp.sms.added', 'user.human.mfa.otp.sms.added');
INSERT INTO fig (name, figure, ok, lost, dup)
SELECT 'read model = fold of the log',
       format('%s factor rows expected, %s in factord.auth_factors; %s missing or different, %s unexpected',
              expected, actual, missing, unexpected),
       missing = 0 AND unexpected = 0, missing, unexpected
  FROM (SELECT count(*) AS expected FROM expected_af) a, (SELECT count(*) AS actual FROM factord.auth_factors) b,
       (SELECT count(*) AS missing FROM (SELECT * FROM expected_af EXCEPT
            SELECT instance_id, user_id, type, state, sequence, created_at, changed_at, resource_owner
              FROM factord.auth_factors) x) c,
       (SELECT count(*) AS unexpected FROM (SELECT instance_id, user_id, type, state, sequence, created_at, changed_at,
            resource_owner FROM factord.auth_factors EXCEPT SELECT * FROM expected_af) y) d;
INSERT INTO fig (name, figure, ok, lost)
SELECT 'projector applied every event (sequences)',
       format('%s users; %s whose applied sequence is not their last', users, n), n = 0, n
  FROM (SELECT count(*) AS users, count(*) FILTER (WHERE p.sequence IS DISTINCT FROM e.m) AS n
          FROM (SELECT instance_id, aggregate_id, max(sequence) AS m FROM factord.events GROUP BY 1, 2) e
          FULL JOIN factord.projected_sequences p ON p.instance_id = e.instance_id AND p.user_id = e.aggregate_id) x;

-- 7. Totals.
INSERT INTO fig (name, figure, ok)
SELECT 'LOST (all checks)', sum(lost)::text, sum(lost) = 0 FROM fig;
INSERT INTO fig (name, figure, ok)
SELECT 'DUPLICATED (all checks)', sum(dup)::text, sum(dup) = 0 FROM fig WHERE name <> 'LOST (all checks)';

-- 8. Recovery: from each kill to the pipeline moving again. Processor: the
-- first command decided after the kill on every partition of the commands
-- topic (a killed processor's partitions wait for the group's session
-- timeout); relay: the first event published after it; projector: the first
-- success reply after it; broker and PostgreSQL: the latest of the three.
CREATE TEMP TABLE dec AS
SELECT (extract(epoch FROM c.decided_at) * 1000)::bigint AS t, v.partition AS p
  FROM factord.commands c JOIN v USING (id);
CREATE INDEX ON dec (p, t);
-- Success replies of commands sent once: the relay also replies 200, to a
-- repeated command, from its stored outcome; for these only the projector
-- does (a processor's redelivery after a crash apart).
CREATE TEMP TABLE ok_ts AS
SELECT rv.ts FROM rv JOIN v USING (id) WHERE v.records = 1 AND rv.j->>'httpStatus' = '200';
CREATE INDEX ON ok_ts (ts);
CREATE INDEX ON chaos.t_events (ts);
CREATE TEMP TABLE kills AS
SELECT k.t_ms, k.target,
       (SELECT min(t_ms) FROM chaos.kills b WHERE b.what = 'restart' AND b.target = k.target AND b.t_ms >= k.t_ms)
         AS back_ms
  FROM chaos.kills k WHERE k.what = 'kill';
-- Progress counts from the restart (records the victim had in flight can
-- still be appended after its death), except for a killed processor's
-- partitions, which the other processor may take over before the restart.
CREATE TEMP TABLE rec AS
SELECT k.t_ms, k.target, k.back_ms - k.t_ms AS down_ms,
       (SELECT max((SELECT min(t) FROM dec WHERE dec.p = ps.p
                      AND dec.t > CASE WHEN k.target LIKE 'process%' THEN k.t_ms ELSE coalesce(k.back_ms, k.t_ms) END))
          FROM (SELECT DISTINCT p FROM dec) ps) - k.t_ms AS proc_ms,
       (SELECT min(ts) FROM chaos.t_events e WHERE e.ts > coalesce(k.back_ms, k.t_ms)) - k.t_ms AS relay_ms,
       (SELECT min(ts) FROM ok_ts WHERE ok_ts.ts > coalesce(k.back_ms, k.t_ms)) - k.t_ms AS proj_ms,
       -- a component killed while a server is away, in the 10 s before it
       -- went or the 15 s after its return, waits for the server: apart
       k.target NOT IN ('broker', 'postgres') AND EXISTS (
           SELECT 1 FROM kills s
            WHERE s.target IN ('broker', 'postgres') AND s.t_ms - 10000 <= k.t_ms
              AND k.t_ms <= 15000 + coalesce(s.back_ms, k.t_ms)) AS in_outage
  FROM kills k;
CREATE TEMP TABLE rec2 AS
SELECT t_ms, target, down_ms, in_outage,
       CASE WHEN target LIKE 'process%' THEN proc_ms WHEN target = 'relay' THEN relay_ms
            WHEN target = 'project' THEN proj_ms ELSE greatest(proc_ms, relay_ms, proj_ms) END AS ms
  FROM rec;
INSERT INTO fig (name, figure, ok)
SELECT 'recovery after kill: ' || grp,
       format('%s kills: longest %s s, median %s s (down before the restart: up to %s s)%s',
              count(*) FILTER (WHERE NOT in_outage),
              coalesce(round(max(ms) FILTER (WHERE NOT in_outage) / 1000.0, 1)::text, '-'),
              coalesce(round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE NOT in_outage)
                              / 1000.0)::numeric, 1)::text, '-'),
              round(max(down_ms) / 1000.0, 1),
              CASE WHEN bool_or(in_outage) THEN format('; %s more during a server outage: longest %s s',
                   count(*) FILTER (WHERE in_outage), round(max(ms) FILTER (WHERE in_outage) / 1000.0, 1)) ELSE '' END),
       true
  FROM (SELECT CASE WHEN target LIKE 'process%' THEN 'process' ELSE target END AS grp, * FROM rec2) x
 GROUP BY grp ORDER BY 1;
INSERT INTO fig (name, figure, ok)
SELECT 'recovery after kill: ' || target || ' (per stage)',
       format('decisions %s s, events published %s s, success replies %s s', round(proc_ms / 1000.0, 1),
              round(relay_ms / 1000.0, 1), round(proj_ms / 1000.0, 1)), true
  FROM rec WHERE target IN ('broker', 'postgres', 'broker-leader', 'pg-primary') ORDER BY t_ms;
-- The unavailability window of each server fault, as callers see it: the
-- reply of the first command sent after the kill, and the longest wait
-- (send to reply) of a command sent in the 10 s after it.
INSERT INTO fig (name, figure, ok)
SELECT 'unavailability after the kill of ' || k.target,
       CASE WHEN f.sent_ms IS NULL THEN 'no command sent after it'
            ELSE format('first command after it replied %s s after the kill; longest wait of one sent in the next 10 s: %s s',
                        coalesce(round((f.reply_ts - k.t_ms) / 1000.0, 1)::text, 'never'),
                        coalesce(round(w.longest / 1000.0, 1)::text, '-')) END,
       true
  FROM kills k
  LEFT JOIN LATERAL (SELECT v.sent_ms, (SELECT min(rv.ts) FROM rv WHERE rv.id = v.id) AS reply_ts
                       FROM v WHERE v.sent_ms > k.t_ms ORDER BY v.sent_ms LIMIT 1) f ON true
  LEFT JOIN LATERAL (SELECT max((SELECT min(rv.ts) FROM rv WHERE rv.id = v.id) - v.sent_ms) AS longest
                       FROM v WHERE v.sent_ms > k.t_ms AND v.sent_ms <= k.t_ms + 10000) w ON true
 WHERE k.target IN ('broker', 'postgres', 'broker-leader', 'pg-primary')
 ORDER BY k.t_ms;
INSERT INTO fig (name, figure, ok)
SELECT 'longest recovery (kill to moving again)',
       CASE WHEN ms IS NULL THEN 'no kills' ELSE format('%s s after the kill of %s', round(ms / 1000.0, 1), target) END,
       true
  FROM (SELECT NULL) dummy
  LEFT JOIN (SELECT * FROM rec2 WHERE ms IS NOT NULL AND NOT in_outage ORDER BY ms DESC LIMIT 1) x ON true;
INSERT INTO fig (name, figure, ok)
SELECT 'command to first reply (send to reply)',
       format('median %s s, p99 %s s, max %s s', round(p50 / 1000.0, 2), round(p99 / 1000.0, 2), round(mx / 1000.0, 1)),
       true
  FROM (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lat)::numeric AS p50,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY lat)::numeric AS p99, max(lat) AS mx
          FROM (SELECT min(rv.ts) - v.sent_ms AS lat FROM v JOIN rv USING (id) WHERE v.sent_ms IS NOT NULL
                 GROUP BY v.id, v.sent_ms) l) x;

SELECT name, figure, ok FROM fig ORDER BY n;
