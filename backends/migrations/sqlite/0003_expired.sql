-- A batch whose deadline passed ends in phase 'expired' (SQLite's phase
-- column has no CHECK; this keeps the migration numbers of both catalogs equal).
SELECT 1;
