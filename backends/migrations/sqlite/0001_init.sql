-- picsift standalone catalog.
CREATE TABLE batches (
    id                  TEXT PRIMARY KEY,
    phase               TEXT NOT NULL,
    staged_key          TEXT NOT NULL,
    upload_bytes        INTEGER NOT NULL,
    total_entries       INTEGER NOT NULL,
    error               TEXT,
    callback_url        TEXT,
    notify_state        TEXT NOT NULL DEFAULT 'none',
    notify_attempts     INTEGER NOT NULL DEFAULT 0,
    notify_last_error   TEXT,
    notify_next_at      INTEGER,
    notify_delivered_at INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    started_at          INTEGER,
    completed_at        INTEGER
);
CREATE INDEX batches_unfinished ON batches(phase) WHERE phase IN ('received', 'processing');
CREATE INDEX batches_notify ON batches(notify_next_at) WHERE notify_state = 'pending';

CREATE TABLE entries (
    batch_id        TEXT NOT NULL REFERENCES batches(id),
    idx             INTEGER NOT NULL,
    name            TEXT NOT NULL,
    compressed_size INTEGER NOT NULL,
    verdict         TEXT,
    reason          TEXT,
    detail          TEXT,
    image_id        TEXT,
    duplicate_of    TEXT,
    duplicate_kind  TEXT,
    decided_at      INTEGER,
    PRIMARY KEY (batch_id, idx)
) WITHOUT ROWID;

CREATE TABLE images (
    id          TEXT PRIMARY KEY,
    format      TEXT NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    orientation INTEGER,
    batch_id    TEXT NOT NULL,
    entry_idx   INTEGER NOT NULL,
    entry_name  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE dedup_claims (
    key         TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    image_id    TEXT,
    lease_until INTEGER NOT NULL
) WITHOUT ROWID;
