-- Quota reservations: an upload in flight holds its place in its tenant's
-- open-batch count and its declared bytes in the monthly quota, taken in
-- the same atomic step as the check, so concurrent uploads cannot all pass
-- a check that only one of them fits. Gone when the batch is created (it
-- counts itself then) or the upload fails; a gateway that dies leaves one
-- until `expires_at`.
CREATE TABLE upload_reservations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX upload_reservations_owner ON upload_reservations (owner, expires_at);
