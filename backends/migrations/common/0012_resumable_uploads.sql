-- Resumable uploads (tus, presigned direct uploads) in progress: the
-- state any gateway replica needs to take the next request, so none of it
-- lives in one gateway's memory. `lock_token`/`lock_until` is the request
-- appending now (a lapsed lock is free); `parts` the stored parts' ETags
-- (JSON array); `tail_key`/`tail_len` the bytes after the last whole part.
-- `finished` (JSON) is set once the upload became a batch or was refused;
-- the row stays until `expires_at` for a client that lost that answer.
CREATE TABLE resumable_uploads (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    length BIGINT,
    upload_offset BIGINT NOT NULL,
    options TEXT NOT NULL,
    multipart_id TEXT NOT NULL,
    parts TEXT NOT NULL,
    tail_key TEXT,
    tail_len BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    lock_token TEXT,
    lock_until BIGINT NOT NULL,
    finished TEXT
);
CREATE INDEX resumable_uploads_expiry ON resumable_uploads (expires_at);
