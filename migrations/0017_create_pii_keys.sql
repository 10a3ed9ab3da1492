-- 0017_create_pii_keys.sql - the key store of crypto-shredded personal data
-- (docs/pii.md, "The key store").
--
-- One row per user that ever had a sealed event: its 256-bit data key,
-- wrapped under the master key (FACTORD_PII_KEY): nonce(12) | AES-256-GCM
-- ciphertext(32) | tag(16), with the instance and user bound as associated
-- data. master_id is the master key's id (first 8 hex digits of SHA-256),
-- so a reader with another master key says so.
--
-- Not append-only: erasure (RemoveUser) overwrites the row in the
-- transaction that appends user.removed, wrapped NULL and erased_at set.
-- The tombstone stays, so that a reader tells "erased" (tombstone) from
-- "never sealed" (no row, plain events).

CREATE TABLE factord.pii_keys (
    instance_id text        NOT NULL,
    user_id     text        NOT NULL,
    wrapped     bytea       CHECK (wrapped IS NULL OR octet_length(wrapped) = 60),
    master_id   text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz,
    CHECK ((wrapped IS NULL) = (erased_at IS NOT NULL)),
    PRIMARY KEY (instance_id, user_id)
);

COMMENT ON TABLE factord.pii_keys IS
    'Per-user data keys of sealed personal data, wrapped by the master key; a NULL wrapped key is an erased user (docs/pii.md).';

-- The audit record of `factord pii seal-legacy` (docs/pii.md, "Events
-- written before sealing"): it rewrites history (the plain personal data of
-- events written before sealing, sealed in place, and the hash chain from
-- there to the head recomputed), so each run leaves what it did here, in
-- its own transaction: the range, the head before and after, how many
-- events it sealed, the chain key's id and the operator's note.
CREATE TABLE factord.pii_rewrites (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    first_position bigint      NOT NULL CHECK (first_position >= 1),
    last_position  bigint      NOT NULL CHECK (last_position >= first_position),
    head_position  bigint      NOT NULL CHECK (head_position >= 0),
    old_head_hash  bytea,
    new_head_hash  bytea,
    events_sealed  bigint      NOT NULL CHECK (events_sealed >= 0),
    events_rehashed bigint     NOT NULL CHECK (events_rehashed >= 0),
    chain_key_id   text        NOT NULL,
    note           text        NOT NULL DEFAULT ''
);

COMMENT ON TABLE factord.pii_rewrites IS
    'Runs of factord pii seal-legacy: each sealed old plain events in place and re-chained the log from there (docs/pii.md).';
