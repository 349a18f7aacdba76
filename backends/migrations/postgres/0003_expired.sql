-- A batch whose deadline passed ends in phase 'expired'.
ALTER TABLE batches DROP CONSTRAINT batches_phase_check;
ALTER TABLE batches ADD CONSTRAINT batches_phase_check
    CHECK (phase IN ('received', 'processing', 'completed', 'failed', 'expired'));
