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
