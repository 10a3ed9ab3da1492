# bench/catchup-lib.sh - sourced by bench/run and bench/catchup.sh: knowing,
# cheaply, when a projector has caught up with an events topic.
#
# Summing every user's applied sequence (the obvious check) reads the whole
# projected_sequences table: at 260,000 users about 20 ms of PostgreSQL's
# CPU per poll, taken from the projector being measured. Instead the last
# event of each partition is read once, before the projector starts; a
# partition's events are applied in offset order, so the topic is caught up
# when each of those is: one primary-key probe per partition per poll. The
# callers check the sum once, after the clock has stopped.
#
# Needs: kcat, jq, and the caller's PSQL (psql binary) and bench_url.

# catchup_targets BROKERS TOPIC: a JSON array of {i, u, s}, the instance,
# user and sequence of the last event of each partition.
catchup_targets() {
    kcat -C -b "$1" -t "$2" -o -1 -e -q -f '%s\n' \
        | jq -cs 'map({i: .instanceId, u: .aggregateId, s: (.sequence | tonumber)})'
}

# catchup_state TARGETS: "started caught_up" as two t/f words: whether any
# event is applied yet, whether every target is.
catchup_state() {
    "$PSQL" -qAtX "$bench_url" -v targets="$1" -F ' ' <<'SQL'
SELECT EXISTS (SELECT 1 FROM factord.projected_sequences),
       (SELECT count(*) FROM json_to_recordset(:'targets') AS r(i text, u text, s bigint)
          JOIN factord.projected_sequences p
            ON p.projection = 'auth_factors' AND p.instance_id = r.i AND p.user_id = r.u
           AND p.sequence >= r.s) = json_array_length(:'targets');
SQL
}

# catchup_applied: the number of events applied (the sum of the applied
# sequences; a whole-table read, for after the measurement).
catchup_applied() {
    "$PSQL" -qAtX "$bench_url" -c "SELECT coalesce(sum(sequence), 0) FROM factord.projected_sequences"
}
