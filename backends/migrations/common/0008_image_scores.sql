-- Every model score of a stored image (from the verdict that stored it),
-- for the search filter "label scored above a value".
CREATE TABLE image_scores (
    image_id TEXT NOT NULL,
    model    TEXT NOT NULL,
    label    TEXT NOT NULL,
    score    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (image_id, model, label)
);
CREATE INDEX image_scores_by_label ON image_scores (model, label, score);
