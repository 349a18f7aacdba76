-- Near duplicates: the distance in a verdict, and a multi-index-hashing
-- index over the PDQ hashes of stored images (core/src/pdq_index.rs): one
-- row per 16-bit segment, key = segment << 16 | value. Only hashes good
-- enough to match (quality 50 or more) are indexed.
ALTER TABLE entries ADD COLUMN distance BIGINT;
CREATE TABLE pdq_mih (
    k        BIGINT NOT NULL,
    image_id TEXT NOT NULL,
    PRIMARY KEY (k, image_id)
) WITHOUT ROWID;
