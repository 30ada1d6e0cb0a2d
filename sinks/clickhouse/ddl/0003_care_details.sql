-- 0003: what a care decision was about and when it is due, and the receiver's answer.
-- sequence is 'seq:step' for follow-up steps (pain_point_id '' then), due_at is the event
-- time at which the action is (or was, for a hold) to be delivered.

ALTER TABLE {db}.care_actions
    ADD COLUMN IF NOT EXISTS sequence String DEFAULT '' AFTER pain_point_id,
    ADD COLUMN IF NOT EXISTS journey_id String DEFAULT '' AFTER sequence,
    ADD COLUMN IF NOT EXISTS tier LowCardinality(String) DEFAULT '' AFTER customer_id,
    ADD COLUMN IF NOT EXISTS due_at DateTime64(3, 'UTC') DEFAULT decided_at AFTER decided_at,
    ADD COLUMN IF NOT EXISTS http_status UInt16 DEFAULT 0 AFTER attempt;
