-- picsift cluster catalog: the schema of migrations/sqlite/0001_init.sql in
-- PostgreSQL. Every number is BIGINT (timestamps are i64 milliseconds) so
-- one row mapping serves both catalogs. Ids compare byte-wise (COLLATE "C")
-- so that ordering by id matches SQLite whatever the database's locale.
-- The dedup claims live in Redis in the cluster, so no dedup_claims table.
CREATE TABLE batches (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    phase               TEXT NOT NULL
                        CHECK (phase IN ('received', 'processing', 'completed', 'failed')),
    staged_key          TEXT NOT NULL,
    upload_bytes        BIGINT NOT NULL,
    total_entries       BIGINT NOT NULL,
    error               TEXT,
    callback_url        TEXT,
    notify_state        TEXT NOT NULL DEFAULT 'none'
                        CHECK (notify_state IN ('none', 'pending', 'delivered', 'failed')),
    notify_attempts     BIGINT NOT NULL DEFAULT 0,
    notify_last_error   TEXT,
    notify_next_at      BIGINT,
    notify_delivered_at BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    started_at          BIGINT,
    completed_at        BIGINT
);
CREATE INDEX batches_unfinished ON batches (created_at) WHERE phase IN ('received', 'processing');
CREATE INDEX batches_notify ON batches (notify_next_at) WHERE notify_state = 'pending';

CREATE TABLE entries (
    batch_id        TEXT COLLATE "C" NOT NULL REFERENCES batches (id),
    idx             BIGINT NOT NULL,
    name            TEXT NOT NULL,
    compressed_size BIGINT NOT NULL,
    verdict         TEXT,
    reason          TEXT,
    detail          TEXT,
    image_id        TEXT COLLATE "C",
    duplicate_of    TEXT COLLATE "C",
    duplicate_kind  TEXT,
    decided_at      BIGINT,
    PRIMARY KEY (batch_id, idx)
);

-- The primary key is the last guard against storing an image twice: two
-- workers racing past the dedup index still write one row (the second
-- insert hits ON CONFLICT DO NOTHING).
CREATE TABLE images (
    id          TEXT COLLATE "C" PRIMARY KEY,
    format      TEXT NOT NULL,
    width       BIGINT NOT NULL,
    height      BIGINT NOT NULL,
    size        BIGINT NOT NULL,
    orientation BIGINT,
    batch_id    TEXT COLLATE "C" NOT NULL,
    entry_idx   BIGINT NOT NULL,
    entry_name  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
