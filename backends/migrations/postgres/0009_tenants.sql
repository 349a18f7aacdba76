-- Tenants: every batch and stored image has an owner; API keys name theirs.
ALTER TABLE batches ADD COLUMN owner TEXT NOT NULL DEFAULT 'default';
CREATE INDEX batches_by_owner ON batches (owner, created_at);

-- The tenant that first stored an image, and every tenant that stored it
-- (with per-tenant dedup, several may have).
ALTER TABLE images ADD COLUMN owner TEXT NOT NULL DEFAULT 'default';
CREATE TABLE image_owners (
    image_id TEXT NOT NULL,
    owner    TEXT NOT NULL,
    PRIMARY KEY (image_id, owner)
);
CREATE INDEX image_owners_by_owner ON image_owners (owner, image_id);
INSERT INTO image_owners (image_id, owner) SELECT id, owner FROM images;

-- API keys, stored as SHA-256 of the key.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    tenant     TEXT NOT NULL,
    role       TEXT NOT NULL,
    label      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- How many times an undecided entry's processing began on a redelivered
-- task (decoder crash detection).
ALTER TABLE entries ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
