-- PDQ perceptual hash (64 hex digits) and its quality (0-100) of each stored image.
ALTER TABLE images ADD COLUMN pdq TEXT;
ALTER TABLE images ADD COLUMN pdq_quality INTEGER;
