-- Indexes for image search (GET /v1/images): keyset pages by upload time
-- or size, and the batch filter.
CREATE INDEX images_created ON images (created_at, id);
CREATE INDEX images_size ON images (size, id);
CREATE INDEX images_batch ON images (batch_id);
