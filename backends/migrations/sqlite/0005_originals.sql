-- Files as uploaded (SHA-256 before sanitising) that picsift stored or
-- found duplicate: the pre-upload lookup (POST /v1/images/lookup) answers
-- from here. One file maps to one stored image; many files may map to the
-- same image (they differed only in metadata, or are near duplicates).
CREATE TABLE originals (
    sha256   TEXT PRIMARY KEY,
    image_id TEXT NOT NULL
) WITHOUT ROWID;
