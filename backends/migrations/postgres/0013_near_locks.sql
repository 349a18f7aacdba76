-- Near duplicates without a global lock (backends/src/sql/pg_near.rs):
-- a check-and-insert locks only the rows of pdq_locks its hash names
-- (core/src/pdq_index.rs, lock_keys: any two hashes within 31 bits name a
-- row in common), and each process answers from a copy of the hashes in
-- its memory, caught up by the id of the transaction that inserted each
-- image. The pdq_mih table it replaces is dropped.
CREATE TABLE pdq_locks (k BIGINT PRIMARY KEY);
INSERT INTO pdq_locks (k) SELECT generate_series(0, 16 * 65536 - 1);
ALTER TABLE images ADD COLUMN xid XID8;
ALTER TABLE images ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX images_xid ON images (xid);
DROP TABLE pdq_mih;
