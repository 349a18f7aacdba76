-- Images whose bytes were put but whose record was not inserted (a worker
-- that lost a near-duplicate race steps back). The bytes are deleted by the
-- orphan sweep only when, after a grace period, no image row names the id:
-- blob keys are content-addressed and shared across tenants, so another
-- tenant's row may point at the very same bytes.
-- `deleting`: the sweep is deleting the bytes; a worker about to put the
-- same bytes waits until the row is gone.
CREATE TABLE orphan_blobs (
    image_id TEXT PRIMARY KEY,
    since BIGINT NOT NULL,
    deleting BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX orphan_blobs_since ON orphan_blobs (since);
