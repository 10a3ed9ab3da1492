-- 0009_add_event_hash_chain.sql - a tamper-evident log (docs/audit.md).
--
-- Every event written from now on carries hash = HMAC-SHA256(chain key,
-- previous event's hash || the event's canonical JSON), in position order;
-- the first chained event's previous hash is 32 zero bytes. The writer
-- computes the hashes while it holds the counter row, so the chain follows
-- commit order exactly as positions do; the counter row keeps the chain's
-- head (position and hash of the last chained event) and moves it in the
-- same transaction. `factord verify` recomputes the chain.
--
-- Rows written before this migration keep hash NULL: verify accepts them
-- only as a prefix of the log, at or below chain_start (the counter's value
-- when this migration ran, under the counter's row lock, so no writer was
-- between taking positions and committing), and reports how many there are.
-- Outbox rows are not chained: they are messages, not facts.

-- A nullable column without a default is added without rewriting the
-- table; NOT VALID spares the scan of the old rows (all NULL), while new
-- rows are checked.
ALTER TABLE factord.events ADD COLUMN hash bytea;
ALTER TABLE factord.events ADD CONSTRAINT events_hash_check
    CHECK (octet_length(hash) = 32) NOT VALID;

ALTER TABLE factord.position_counter
    ADD COLUMN head_position bigint NOT NULL DEFAULT 0 CHECK (head_position >= 0),
    ADD COLUMN head_hash bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
        CHECK (octet_length(head_hash) = 32),
    ADD COLUMN chain_start bigint NOT NULL DEFAULT 0 CHECK (chain_start >= 0);

UPDATE factord.position_counter SET chain_start = value WHERE id = 1;
