-- The quality and ML checks' measurements of a verdict, as JSON
-- (core::verdict::Checks).
ALTER TABLE entries ADD COLUMN checks TEXT;
